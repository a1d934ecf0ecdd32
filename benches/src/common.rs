//! Shared by the benchmarks: starting a release `portier` and the keep-alive load generator.
#![allow(dead_code)] // each benchmark binary uses part of this module

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback port free now (for a server started next).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// The median of the finite values (NaN when there are none).
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Keep-alive connections hammering one cached URL; returns responses per second.
pub async fn load(addr: SocketAddr, connections: usize, seconds: u64) -> f64 {
    load_with(addr, connections, seconds, b"GET /api/stats/summary?username=demo HTTP/1.1\r\nHost: bench\r\n\r\n").await
}

/// [`load`] sending `req` (a whole request head) over and over.
pub async fn load_with(addr: SocketAddr, connections: usize, seconds: u64, req: &'static [u8]) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let _ = s.set_nodelay(true);
            let mut reconnects = 0;
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0usize;
            while Instant::now() < deadline {
                if s.write_all(req).await.is_err() {
                    return;
                }
                if !read_response(&mut s, &mut buf, &mut filled).await {
                    // The server ended the keep-alive connection (e.g. nginx after
                    // keepalive_requests): open another, as a client would.
                    reconnects += 1;
                    filled = 0;
                    let Ok(again) = tokio::net::TcpStream::connect(addr).await else { return };
                    s = again;
                    let _ = s.set_nodelay(true);
                    if reconnects > 100_000 {
                        return;
                    }
                    continue;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// Reads one response (head, then `Content-Length` bytes of body) from a keep-alive
/// connection; bytes of the next response stay in `buf`. False when the connection closed.
pub async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, filled: &mut usize) -> bool {
    loop {
        if let Some(end) = buf[..*filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
            let total = end + 4 + len;
            if *filled >= total {
                buf.copy_within(total..*filled, 0);
                *filled -= total;
                return true;
            }
        }
        if *filled == buf.len() {
            // A response larger than the buffer (a 100 KB script): grow it.
            buf.resize(buf.len() * 2, 0);
        }
        match s.read(&mut buf[*filled..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => *filled += n,
        }
    }
}

pub struct Proxy {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, when the settings have `[tls]`.
    pub tls: Option<SocketAddr>,
    _dir: std::path::PathBuf,
}

impl Proxy {
    /// Resident memory of the proxy process, in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
    }
}

impl Proxy {
    /// SIGTERM, then waits for the process to exit (a profiler writes its output then).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process and all its descendants, in KiB (nginx's master and worker,
/// varnishd's manager and cache child).
pub fn tree_rss_kib(root: u32) -> u64 {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name may hold spaces and parentheses: fields resume after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

pub fn start_proxy(bin: &str, origin: SocketAddr, telemetry: &str, tag: &str) -> Proxy {
    start_proxy_under(&[], bin, origin, telemetry, tag)
}

/// [`start_proxy`] run by `wrapper` (e.g. `valgrind --tool=callgrind …`), given the time it
/// needs to start.
pub fn start_proxy_under(wrapper: &[String], bin: &str, origin: SocketAddr, telemetry: &str, tag: &str) -> Proxy {
    let dir = std::env::temp_dir().join(format!("portier-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[server]\nthreads = 1\n{telemetry}\n[upstreams.api]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"api\"\n"
    );
    let path = dir.join("portier.toml");
    std::fs::write(&path, cfg).expect("write config");
    let log = dir.join("stdout.log");
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = command
        .arg("run")
        .arg("--config")
        .arg(&path)
        // The access log goes to a file, as nginx's does: a reader draining a pipe would take
        // CPU time from the load generator's side of the machine.
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (build it with `cargo build --release`)"));
    let wait = if wrapper.is_empty() { 20 } else { 180 };
    let deadline = std::time::Instant::now() + Duration::from_secs(wait);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"event\":\"listening\"")) {
            break l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "portier did not start within {wait} s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening event");
    let public = v["public"].as_str().and_then(|s| s.parse().ok()).expect("public address");
    let admin = v["admin"].as_str().and_then(|s| s.parse().ok()).expect("admin address");
    let tls = v["tls"].as_str().and_then(|s| s.parse().ok());
    Proxy { child, public, admin, tls, _dir: dir }
}

/// A wrk duration (`812.00us`, `3.05ms`, `1.20s`) in milliseconds.
pub fn millis(v: &str) -> f64 {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().map(|n| n * scale).unwrap_or(f64::NAN)
}

//! The shared test harness: a sample origin on port 0, Portier as a real process on port 0
//! (it prints the addresses it bound), and a small HTTP/1.1 client that shows exact headers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use portier::demo::Origin;

pub async fn origin() -> Origin {
    Origin::start("127.0.0.1:0".parse().unwrap()).await.expect("origin starts")
}

/// A loopback port that refuses connections for the rest of the test process: a socket is
/// bound to it but never listens (and is never closed), so no other test can be given it.
pub fn closed_port() -> SocketAddr {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0, "bind");
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        assert_eq!(libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len), 0);
        SocketAddr::from(([127, 0, 0, 1], u16::from_be(got.sin_port)))
    }
}

/// A free loopback port for a server that binds it itself (Prometheus cannot bind port 0).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The repository root (the workspace above `proxy/`).
pub fn root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A running `portier demo` (sample origin + Portier), its stdout lines kept; killed on drop.
pub struct Demo {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `portier demo` on port 0 everywhere with this config file.
pub fn start_demo(config: &std::path::Path) -> Demo {
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--origin", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("portier demo starts");
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("\"event\":\"listening\"") {
                let _ = tx.send(line.clone());
            }
            l2.lock().unwrap().push(line);
        }
    });
    let v: serde_json::Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(20)).expect("demo listening")).unwrap();
    Demo { child, public: v["public"].as_str().unwrap().parse().unwrap(), admin: v["admin"].as_str().unwrap().parse().unwrap(), lines }
}

/// A running `portier` process; killed on drop.
pub struct Portier {
    pub child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, when the config has `[tls]`.
    pub tls: Option<SocketAddr>,
    /// Every stdout line (JSON events and access log lines).
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portier"))
}

impl Portier {
    /// Starts `portier run` with this config text; the listen section is replaced by port 0
    /// listeners unless the text has its own.
    pub fn start(config: &str) -> Portier {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Portier {
        Self::start_binary(&bin(), config, env)
    }

    /// [`Self::start_with_env`] with another build of the binary (a stripped copy).
    pub fn start_binary(binary: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Portier {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portier.toml");
        let text = if config.contains("[listen]") {
            config.to_string()
        } else {
            format!("[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{config}")
        };
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(binary);
        cmd.arg("run").arg("--config").arg(&path).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("portier starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"listening\"") {
                    let _ = tx.send(line.clone());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let elines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                elines.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("portier did not start; stderr: {:?}", stderr.lock().unwrap());
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let public = v["public"].as_str().unwrap().parse().unwrap();
        let admin = v["admin"].as_str().unwrap().parse().unwrap();
        let tls = v["tls"].as_str().and_then(|t| t.parse().ok());
        Portier { child, public, admin, tls, stdout, stderr, _dir: dir }
    }

    /// The file it was started with: rewrite it and reload to change the configuration.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("portier.toml")
    }

    /// A memory figure of the process from `/proc/<pid>/status`, in KiB: `VmRSS` (resident
    /// now) or `VmHWM` (resident at its peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'));
        line.and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics Portier printed (a task's panic does not stop the process, so look).
    pub fn panics(&self) -> Vec<String> {
        self.stdout_lines().into_iter().chain(self.stderr_lines()).filter(|l| l.contains("panicked")).collect()
    }
}

impl Drop for Portier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The value of a header (case-insensitive name); panics with the whole response if absent.
    pub fn header(&self, name: &str) -> &str {
        self.opt_header(name).unwrap_or_else(|| panic!("no {name} header in {self:#?}"))
    }
    pub fn opt_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Resp> {
    request_from("127.0.0.1".parse().unwrap(), addr, method, target, headers, body).await
}

/// [`request`] from a chosen loopback source address (`127.0.0.2` for allow/deny tests).
pub async fn request_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr)).await??;
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await??;
    parse_response(&raw, method == "HEAD")
}

pub async fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, &[], b"").await.expect("GET")
}

pub async fn get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", target, headers, b"").await.expect("GET")
}

fn parse_response(raw: &[u8], head_only: bool) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{m}: {:?}", String::from_utf8_lossy(raw)));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("status"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head_only || status == 304 || status == 204 {
        Vec::new()
    } else if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(Resp { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..nl]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Config text for one `api` pool at `api` with `/api/*` and `/health` routed to it and the
/// rest to `web`.
pub fn two_pool_config(api: SocketAddr, web: SocketAddr) -> String {
    format!(
        r#"
[upstreams.api]
addresses = ["{api}"]
[upstreams.web]
addresses = ["{web}"]
[[routes]]
path = "/api/*"
pool = "api"
[[routes]]
path = "/health"
pool = "api"
[[routes]]
path = "/*"
pool = "web"
"#
    )
}

pub mod client;
pub mod nginx;
pub mod otlp;
pub mod scripted;

/// Reads one sample value from a Prometheus text exposition (`name{labels} value`).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
pub mod prom;
pub mod recorder;
pub mod redis;

/// One keep-alive GET on `s`; the status and body, or None when the connection failed.
pub async fn keep_alive_get(s: &mut tokio::net::TcpStream, host: impl std::fmt::Display, path: &str) -> Option<(u16, String)> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok())?;
    while raw.len() < head_end + len {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Some((status, String::from_utf8_lossy(&raw[head_end..head_end + len]).to_string()))
}

/// An origin written at the byte level, for answers no HTTP library would send (an HTTP/1.0
/// status line, a 103 before the answer, a close-delimited body): `reply` gets the request
/// as read and returns the bytes to send; the connection then closes.
pub async fn raw_origin(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let answer = reply(&String::from_utf8_lossy(&buf[..n]));
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

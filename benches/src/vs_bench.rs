//! Portier against nginx (`proxy_cache`) and Varnish, each pinned to the same single CPU with
//! one worker, in front of the same static origin, with the load generator (`wrk -t1`) and
//! the origin pinned to the other CPU: issue 13's whole table in one command.
//!
//! Scenarios, alternated server by server each round (medians printed):
//! - `hit2k`, `hit100k`: one cached URL, `wrk --latency` (req/s, p99);
//! - `miss`: a `no-store` URL (the origin answers every request), against the origin directly too;
//! - `tlshit2k`: the 2 KB hit over HTTPS with HTTP/1.1 (`wrk` on `https://`), nginx `ssl` and
//!   Portier's `[tls]` (Varnish has no TLS);
//! - `h2hit2k`: the 2 KB hit over HTTPS with HTTP/2 (`h2load -t1`, `--connections` / 4 clients
//!   with 4 streams each), nginx `http2` and Portier's `[tls]` (h2 by ALPN);
//! - `coalesce`: 64 clients at once on a cold URL the origin answers in 50 ms (origin requests,
//!   slowest client);
//! - `memory` (once per server): `--objects` distinct 2 KB URLs, resident memory added per object;
//! - `--callgrind`: instructions per 2 KB hit, Portier and nginx under `valgrind --tool=callgrind`,
//!   (total after 2,200 hits − total after 200) / 2,000.
//!
//! Each server runs with its defaults for logging: Portier's metrics and JSON access log, nginx's
//! access log, Varnish's shared-memory log. nginx has `proxy_cache_lock on` (off by default: without it
//! every cold client goes to the origin), except on `/miss`: with the lock, requests for a `no-store`
//! URL queue behind one another.
//!
//! Usage: `vs-bench [--portier target/release/portier] [--rounds 3] [--seconds 3] [--connections 64]
//!         [--cpu 1] [--objects 100000] [--only hit2k,hit100k,tlshit2k,h2hit2k,miss,coalesce,memory] [--callgrind] [--smoke]`
//! `--smoke`: one round of 1 s, 2,000 objects, and a non-zero exit on any sign of a broken
//! scenario (an origin request during a hit run, an error answer, a zero figure). Needs nginx,
//! varnishd, wrk and h2load (`apt-get install nginx-light varnish wrk nghttp2-client`; `make bench-vs`
//! installs them).

mod common;
mod static_origin;
use common::{free_port, median, millis, read_response, start_proxy_under, tree_rss_kib, Proxy};
use static_origin::StaticOrigin;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const SERVERS: [&str; 3] = ["nginx", "varnish", "portier"];
const SCENARIOS: [&str; 7] = ["hit2k", "hit100k", "tlshit2k", "h2hit2k", "miss", "coalesce", "memory"];

struct Args {
    portier: String,
    rounds: usize,
    seconds: u64,
    connections: usize,
    cpu: String,
    objects: usize,
    only: Vec<String>,
    callgrind: bool,
    smoke: bool,
}

fn args() -> Args {
    let mut a = Args {
        portier: "target/release/portier".into(),
        rounds: 3,
        seconds: 3,
        connections: 64,
        cpu: "1".into(),
        objects: 100_000,
        only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        callgrind: false,
        smoke: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let (flag, value) = (v[i].as_str(), v.get(i + 1));
        i += 2;
        match (flag, value) {
            ("--portier", Some(p)) => a.portier = p.clone(),
            ("--rounds", Some(n)) => a.rounds = n.parse().unwrap_or(a.rounds),
            ("--seconds", Some(n)) => a.seconds = n.parse().unwrap_or(a.seconds),
            ("--connections", Some(n)) => a.connections = n.parse().unwrap_or(a.connections),
            ("--cpu", Some(c)) => a.cpu = c.clone(),
            ("--objects", Some(n)) => a.objects = n.parse().unwrap_or(a.objects),
            ("--only", Some(list)) => a.only = list.split(',').map(str::to_string).collect(),
            ("--callgrind", _) => {
                a.callgrind = true;
                i -= 1;
            }
            ("--smoke", _) => {
                (a.smoke, a.rounds, a.seconds, a.objects, a.connections) = (true, 1, 1, 2_000, 16);
                i -= 1;
            }
            _ => {
                eprintln!("usage: vs-bench [--portier PATH] [--rounds N] [--seconds N] [--connections N] [--cpu N] [--objects N] [--only LIST] [--callgrind] [--smoke]");
                std::process::exit(2);
            }
        }
    }
    if let Some(bad) = a.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        eprintln!("--only: unknown scenario {bad:?} (known: {})", SCENARIOS.join(","));
        std::process::exit(2);
    }
    a
}

/// nginx or varnishd, killed (with its children) and its directory removed on drop.
struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
}
impl Drop for Daemon {
    fn drop(&mut self) {
        // varnishd's manager takes its cache child down; nginx's master its worker.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Server {
    Portier(Proxy),
    Other(Daemon),
}
impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Portier(p) => p.child.id(),
            Server::Other(d) => d.child.id(),
        }
    }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vs-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn need(cmd: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).stdout(Stdio::null()).status();
    if !found.is_ok_and(|s| s.success()) {
        eprintln!("{cmd} not found. Run: sudo apt-get install -y {package}");
        std::process::exit(1);
    }
}

/// A self-signed certificate for the TLS rows, written once into `dir`: (cert, key).
fn test_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("cert.pem");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("key.pem");
    (cert, key)
}

/// The TLS listener of one server in one round, and the certificate it serves.
struct Tls<'a> {
    addr: SocketAddr,
    cert: &'a (std::path::PathBuf, std::path::PathBuf),
}

fn nginx_conf(dir: &std::path::Path, addr: SocketAddr, origin: SocketAddr, single_process: bool, tls: Option<&Tls>) -> std::path::PathBuf {
    let d = dir.display();
    let master = if single_process { "master_process off;\n" } else { "" };
    let tls = tls.map_or(String::new(), |t| {
        format!(
            "    listen {} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_session_cache shared:tls:8m;\n",
            t.addr,
            t.cert.0.display(),
            t.cert.1.display()
        )
    });
    let conf = format!(
        "{master}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log {d}/access.log;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           proxy_cache_path {d}/cache levels=1:2 keys_zone=c:64m max_size=4g;\n  upstream o {{ server {origin}; keepalive 64; }}\n\
           server {{\n    listen {addr};\n{tls}    location / {{\n      proxy_pass http://o;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache c;\n      proxy_cache_lock on;\n      add_header X-Cache $upstream_cache_status;\n    }}\n\
             location /miss {{\n      proxy_pass http://o;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache c;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    path
}

/// Starts one server: its plain address and, for nginx and Portier when `cert` is given, its
/// HTTPS one (HTTP/1.1 and HTTP/2 by ALPN).
fn start(
    name: &str,
    a: &Args,
    origin: SocketAddr,
    tag: &str,
    cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> (Server, SocketAddr, Option<SocketAddr>) {
    match name {
        "portier" => {
            // Its defaults (metrics, JSON access log), with room for the memory scenario's objects.
            let mut settings = "[cache]\nmax_size = \"4GiB\"\n".to_string();
            if let Some((c, k)) = cert {
                settings += &format!(
                    "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
                    c.display(),
                    k.display()
                );
            }
            let p = start_proxy_under(&[], &a.portier, origin, &settings, tag);
            let _ = Command::new("taskset").args(["-a", "-p", "-c", &a.cpu, &p.child.id().to_string()]).stdout(Stdio::null()).status();
            let (addr, tls) = (p.public, p.tls);
            (Server::Portier(p), addr, tls)
        }
        "nginx" => {
            let dir = tmpdir(&format!("nginx-{tag}"));
            let addr = free_port();
            let tls = cert.map(|cert| Tls { addr: free_port(), cert });
            let conf = nginx_conf(&dir, addr, origin, false, tls.as_ref());
            let child = Command::new("taskset")
                .args(["-c", &a.cpu, "nginx", "-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            (Server::Other(Daemon { child, dir }), addr, tls.map(|t| t.addr))
        }
        _ => {
            let dir = tmpdir(&format!("varnish-{tag}"));
            let addr = free_port();
            let child = Command::new("taskset")
                .args(["-c", &a.cpu, "varnishd", "-F", "-j", "none", "-a"])
                .arg(addr.to_string())
                .arg("-b")
                .arg(origin.to_string())
                .arg("-n")
                .arg(&dir)
                .args(["-s", "malloc,4g", "-p", "thread_pools=1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("varnishd starts");
            (Server::Other(Daemon { child, dir }), addr, None)
        }
    }
}

async fn wait_up(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not come up");
}

/// One GET on a new connection; true on a complete response. The `Host` is the one wrk
/// sends, so both ask for the same cached object.
async fn get(addr: SocketAddr, target: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (mut buf, mut filled) = (vec![0u8; 256 * 1024], 0);
    s.write_all(req.as_bytes()).await.is_ok() && read_response(&mut s, &mut buf, &mut filled).await
}

struct Wrk {
    rps: f64,
    p99_ms: f64,
    mean_ms: f64,
    errors: u64,
}

/// `wrk -t1` from this process's CPU (the one the proxies are not on).
fn wrk(addr: SocketAddr, path: &str, connections: usize, seconds: u64) -> Wrk {
    wrk_url(&format!("http://{addr}{path}"), connections, seconds)
}

/// [`wrk`] on a whole URL (`https://` for the TLS row).
fn wrk_url(url: &str, connections: usize, seconds: u64) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut w = Wrk { rps: 0.0, p99_ms: f64::NAN, mean_ms: f64::NAN, errors: 0 };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["99%", v] => w.p99_ms = millis(v),
            ["Latency", avg, ..] if *avg != "Distribution" => w.mean_ms = millis(avg),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0": reads count the server's keep-alive closes.
                let nums: Vec<u64> = rest.iter().filter_map(|t| t.trim_end_matches(',').parse().ok()).collect();
                w.errors += nums.first().copied().unwrap_or(0) + nums.get(2).copied().unwrap_or(0) + nums.get(3).copied().unwrap_or(0);
            }
            _ => {}
        }
    }
    w
}

/// `h2load -t1` over HTTP/2: `clients` connections with `streams` concurrent streams each, for
/// `seconds` (or `-n requests` when `requests` is given). h2load prints no percentiles, so the
/// latency is its mean "time for request".
fn h2load(url: &str, clients: usize, streams: usize, seconds: u64, requests: Option<usize>) -> Wrk {
    let mut cmd = Command::new("h2load");
    cmd.args(["-t1", &format!("-c{clients}"), &format!("-m{streams}")]);
    match requests {
        Some(n) => cmd.arg(format!("-n{n}")),
        None => cmd.arg(format!("-D{seconds}")),
    };
    let out = cmd.arg(url).output().expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut w = Wrk { rps: 0.0, p99_ms: f64::NAN, mean_ms: f64::NAN, errors: 0 };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["finished", "in", _, rps, "req/s,", ..] => w.rps = rps.parse().unwrap_or(0.0),
            ["requests:", rest @ ..] => {
                // "N total, N started, N done, N succeeded, F failed, E errored, T timeout"
                for pair in rest.chunks(2) {
                    if let [n, what] = pair {
                        if matches!(what.trim_end_matches(','), "failed" | "errored" | "timeout") {
                            w.errors += n.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
            ["status", "codes:", _, "2xx,", n3, "3xx,", n4, "4xx,", n5, "5xx"] => {
                w.errors += [n3, n4, n5].iter().map(|n| n.parse::<u64>().unwrap_or(0)).sum::<u64>();
            }
            ["time", "for", "request:", _min, _max, mean, ..] => w.mean_ms = millis(mean),
            _ => {}
        }
    }
    if !out.status.success() {
        w.errors += 1;
    }
    w
}

/// `clients` connections send the same GET at once; (slowest client, all answered).
async fn stampede(addr: SocketAddr, target: &str, clients: usize) -> (Duration, bool) {
    let mut conns = Vec::new();
    for _ in 0..clients {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            conns.push(s);
        }
    }
    let all_connected = conns.len() == clients;
    let req = format!("GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(conns.len() + 1));
    let mut tasks = Vec::new();
    for mut s in conns {
        let (req, gate) = (req.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let t = Instant::now();
            let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
            let ok = s.write_all(req.as_bytes()).await.is_ok() && read_response(&mut s, &mut buf, &mut filled).await;
            (t.elapsed(), ok)
        }));
    }
    gate.wait().await;
    let mut slowest = Duration::ZERO;
    let mut ok = all_connected;
    for t in tasks {
        match t.await {
            Ok((d, answered)) => {
                slowest = slowest.max(d);
                ok &= answered;
            }
            Err(_) => ok = false,
        }
    }
    (slowest, ok)
}

/// `n` distinct 2 KB URLs from 8 keep-alive connections (with [`get`]'s `Host`); false if a
/// connection failed.
async fn fill(addr: SocketAddr, tag: &str, n: usize) -> bool {
    let conns = 8;
    let per = n.div_ceil(conns);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
            let _ = s.set_nodelay(true);
            let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
            for i in c * per..((c + 1) * per).min(n) {
                let req = format!("GET /2k?{tag}={i} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() || !read_response(&mut s, &mut buf, &mut filled).await {
                    return false;
                }
            }
            true
        }));
    }
    let mut ok = true;
    for t in tasks {
        ok &= t.await.unwrap_or(false);
    }
    ok
}

fn du_kib(dir: &std::path::Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(dir).output();
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next().and_then(|v| v.parse().ok())).unwrap_or(0)
}

#[derive(Default, Clone)]
struct Figures {
    hit2k: Vec<f64>,
    hit2k_p99: Vec<f64>,
    hit100k: Vec<f64>,
    hit100k_p99: Vec<f64>,
    tls2k: Vec<f64>,
    tls2k_p99: Vec<f64>,
    h2_2k: Vec<f64>,
    h2_2k_mean: Vec<f64>,
    miss: Vec<f64>,
    miss_mean: Vec<f64>,
    coalesce: Vec<(u64, f64)>,
    memory: Option<(f64, f64, usize)>, // resident B per object, disk B per object, objects kept
    instructions: Option<f64>,
}

/// Instructions per 2 KB hit under callgrind: a run of `warm + n` hits minus a run of `warm`.
async fn callgrind(name: &str, a: &Args, origin: &StaticOrigin) -> Option<f64> {
    let mut totals = Vec::new();
    for n in [200usize, 2_200] {
        let dir = tmpdir(&format!("cg-{name}-{n}"));
        let out = dir.join("callgrind.out");
        let wrapper: Vec<String> =
            ["valgrind", "--tool=callgrind", &format!("--callgrind-out-file={}", out.display())].iter().map(|s| s.to_string()).collect();
        let target = format!("/2k?cg={name}{n}");
        let (addr, stop): (SocketAddr, Box<dyn FnOnce() + Send>) = if name == "portier" {
            let p = start_proxy_under(&wrapper, &a.portier, origin.addr, "", &format!("cg{n}"));
            let addr = p.public;
            (
                addr,
                Box::new(move || {
                    let mut p = p;
                    p.terminate()
                }),
            )
        } else {
            let addr = free_port();
            let conf = nginx_conf(&dir, addr, origin.addr, true, None);
            let child = Command::new(&wrapper[0])
                .args(&wrapper[1..])
                .args(["nginx", "-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("valgrind nginx");
            wait_up(addr).await;
            (
                addr,
                Box::new(move || {
                    let mut child = child;
                    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                    let _ = child.wait();
                }),
            )
        };
        wait_up(addr).await;
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return None };
        let req = format!("GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let (mut buf, mut filled) = (vec![0u8; 64 * 1024], 0);
        for _ in 0..=n {
            if s.write_all(req.as_bytes()).await.is_err() || !read_response(&mut s, &mut buf, &mut filled).await {
                return None;
            }
        }
        drop(s);
        tokio::task::spawn_blocking(stop).await.ok()?;
        if origin.hits(&target) != 1 {
            eprintln!("callgrind {name}: the origin saw {target} {} times (1 expected)", origin.hits(&target));
            return None;
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let total = text.lines().find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")));
        totals.push(total.and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Some((totals[1] - totals[0]) / 2_000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    need("nginx", "nginx-light");
    need("varnishd", "varnish");
    need("wrk", "wrk");
    need("h2load", "nghttp2-client");
    if a.callgrind {
        need("valgrind", "valgrind");
    }
    if !std::path::Path::new(&a.portier).exists() {
        eprintln!("{} not found: build it with `cargo build --release -p portier`, or pass --portier PATH", a.portier);
        std::process::exit(1);
    }
    if std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
        eprintln!("vs-bench pins the servers and the load generator to two different CPUs: this machine has one");
        std::process::exit(1);
    }
    // The load generator and the origin on the CPU the proxies are not on.
    let other = if a.cpu == "0" { "1" } else { "0" };
    let _ = Command::new("taskset").args(["-a", "-p", "-c", other, &std::process::id().to_string()]).stdout(Stdio::null()).status();
    let origin = StaticOrigin::start().await;
    let on = |s: &str| a.only.iter().any(|o| o == s);
    let cert_dir = tmpdir("cert");
    let cert = test_cert(&cert_dir);
    let mut figs: Vec<Figures> = vec![Figures::default(); 3];
    let mut direct_miss = Vec::new();
    let mut direct_mean = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    // Pingora with no hooks (bare-pingora, built beside portier): the floor under Portier's
    // pass-through, measured in the same rounds.
    let bare = std::path::Path::new(&a.portier).with_file_name("bare-pingora");
    let mut bare_miss = Vec::new();
    for round in 0..a.rounds {
        if on("miss") {
            let w = wrk(origin.addr, "/miss", a.connections, a.seconds);
            println!("round {round}   direct: miss {:>9.0} req/s, mean {:.2} ms", w.rps, w.mean_ms);
            direct_miss.push(w.rps);
            direct_mean.push(w.mean_ms);
            if bare.exists() {
                let addr = free_port();
                let child = Command::new("taskset")
                    .args(["-c", &a.cpu])
                    .arg(&bare)
                    .arg(addr.to_string())
                    .arg(origin.addr.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("bare-pingora starts");
                let daemon = Daemon { child, dir: tmpdir(&format!("bare-{round}")) };
                wait_up(addr).await;
                let w = wrk(addr, "/miss", a.connections, a.seconds);
                println!("round {round}     bare: miss {:>9.0} req/s, mean {:.2} ms (Pingora, no hooks)", w.rps, w.mean_ms);
                bare_miss.push(if w.errors == 0 { w.rps } else { f64::NAN });
                drop(daemon);
            }
        }
        for (i, name) in SERVERS.iter().enumerate() {
            let (server, addr, tls) = start(name, &a, origin.addr, &format!("r{round}"), Some(&cert));
            wait_up(addr).await;
            if let Some(t) = tls {
                wait_up(t).await;
            }
            let mut line = format!("round {round} {name:>8}:");
            for (scenario, path) in [("hit2k", "/2k"), ("hit100k", "/100k")] {
                if !on(scenario) {
                    continue;
                }
                // Twice: the first fills, the second must not reach the origin.
                let before = origin.hits(path);
                let warmed = get(addr, path).await && get(addr, path).await;
                let stored = origin.hits(path);
                let w = wrk(addr, path, a.connections, a.seconds);
                let leaked = origin.hits(path) - stored;
                if !warmed || stored > before + 1 || leaked > 0 || w.errors > 0 || w.rps <= 0.0 {
                    problems.push(format!(
                        "{name} {scenario}: warmed {warmed}, origin requests while warming {}, during the run {leaked}, errors {}, {:.0} req/s",
                        stored - before,
                        w.errors,
                        w.rps
                    ));
                }
                line += &format!(" {scenario} {:>8.0} req/s p99 {:.2} ms;", w.rps, w.p99_ms);
                let f = &mut figs[i];
                if scenario == "hit2k" {
                    f.hit2k.push(w.rps);
                    f.hit2k_p99.push(w.p99_ms);
                } else {
                    f.hit100k.push(w.rps);
                    f.hit100k_p99.push(w.p99_ms);
                }
            }
            // Over TLS: HTTP/1.1 (wrk) and HTTP/2 (h2load) share one https entry, warmed once.
            if let (Some(t), true) = (tls, on("tlshit2k") || on("h2hit2k")) {
                let url = format!("https://{t}/2k");
                let before = origin.hits("/2k");
                let warm = h2load(&url, 1, 1, 0, Some(2));
                let stored = origin.hits("/2k");
                for (scenario, h2) in [("tlshit2k", false), ("h2hit2k", true)] {
                    if !on(scenario) {
                        continue;
                    }
                    let w = if h2 {
                        h2load(&url, (a.connections / 4).max(1), 4, a.seconds, None)
                    } else {
                        wrk_url(&url, a.connections, a.seconds)
                    };
                    let leaked = origin.hits("/2k") - stored;
                    if warm.errors > 0 || stored > before + 1 || leaked > 0 || w.errors > 0 || w.rps <= 0.0 {
                        problems.push(format!(
                            "{name} {scenario}: warm-up errors {}, origin requests while warming {}, during the run {leaked}, errors {}, {:.0} req/s",
                            warm.errors,
                            stored - before,
                            w.errors,
                            w.rps
                        ));
                    }
                    let f = &mut figs[i];
                    if h2 {
                        line += &format!(" {scenario} {:>8.0} req/s mean {:.2} ms;", w.rps, w.mean_ms);
                        f.h2_2k.push(w.rps);
                        f.h2_2k_mean.push(w.mean_ms);
                    } else {
                        line += &format!(" {scenario} {:>8.0} req/s p99 {:.2} ms;", w.rps, w.p99_ms);
                        f.tls2k.push(w.rps);
                        f.tls2k_p99.push(w.p99_ms);
                    }
                }
            }
            if on("miss") {
                let before = origin.hits("/miss");
                let w = wrk(addr, "/miss", a.connections, a.seconds);
                let asked = origin.hits("/miss") - before;
                // Every answer must have come from the origin (no-store).
                if w.errors > 0 || w.rps <= 0.0 || (asked as f64) < w.rps * a.seconds as f64 * 0.9 {
                    problems.push(format!("{name} miss: {asked} origin requests for {:.0} req/s, errors {}", w.rps, w.errors));
                }
                line += &format!(" miss {:>8.0} req/s mean {:.2} ms;", w.rps, w.mean_ms);
                figs[i].miss.push(w.rps);
                figs[i].miss_mean.push(w.mean_ms);
            }
            if on("coalesce") {
                let target = format!("/slow?ms=50&round={round}&server={name}");
                let (slowest, ok) = stampede(addr, &target, 64).await;
                let asked = origin.hits(&target);
                if !ok || asked == 0 {
                    problems.push(format!("{name} coalesce: all answered {ok}, origin requests {asked}"));
                }
                line += &format!(" coalesce {asked} origin / {:.0} ms", slowest.as_secs_f64() * 1000.0);
                figs[i].coalesce.push((asked, slowest.as_secs_f64() * 1000.0));
            }
            println!("{line}");
            drop(server);
        }
    }

    if on("memory") {
        for (i, name) in SERVERS.iter().enumerate() {
            let (server, addr, _) = start(name, &a, origin.addr, "mem", None);
            wait_up(addr).await;
            let tag = format!("m{name}");
            // One object first, so start-up allocations and the first connection are in the base.
            let _ = get(addr, &format!("/2k?{tag}=warm")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let base = tree_rss_kib(server.pid());
            let asked_before = origin.total();
            let ok = fill(addr, &tag, a.objects).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let full = tree_rss_kib(server.pid());
            let filled = origin.total() - asked_before;
            // How many are still held: a sample asked again must not reach the origin.
            let sample = 200.min(a.objects);
            let before = origin.total();
            for k in 0..sample {
                let _ = get(addr, &format!("/2k?{tag}={}", k * a.objects / sample)).await;
            }
            let kept = sample as u64 - (origin.total() - before).min(sample as u64);
            let kept_objects = (a.objects as u64 * kept / sample.max(1) as u64) as usize;
            let disk = match &server {
                Server::Other(d) if *name == "nginx" => du_kib(&d.dir.join("cache")),
                _ => 0,
            };
            let per = |kib: u64| (kib * 1024) as f64 / kept_objects.max(1) as f64;
            if !ok || filled < a.objects as u64 || kept == 0 {
                problems
                    .push(format!("{name} memory: fill ok {ok}, origin requests {filled} for {} URLs, {kept}/{sample} kept", a.objects));
            }
            println!(
                "memory {name:>8}: {} objects, ~{kept_objects} kept ({kept}/{sample} sampled), resident {:.1} -> {:.1} MiB: {:.0} B per object{}",
                a.objects,
                base as f64 / 1024.0,
                full as f64 / 1024.0,
                per(full.saturating_sub(base)),
                if disk > 0 { format!(", {:.0} B per object on disk", per(disk)) } else { String::new() }
            );
            figs[i].memory = Some((per(full.saturating_sub(base)), per(disk), kept_objects));
            drop(server);
        }
    }

    if a.callgrind {
        for (i, name) in SERVERS.iter().enumerate() {
            if *name == "varnish" {
                continue; // several processes and threads: not counted
            }
            let per = callgrind(name, &a, &origin).await;
            println!("callgrind {name:>8}: {} instructions per 2 KB hit", per.map_or("-".to_string(), |v| format!("{v:.0}")));
            if per.is_none() {
                problems.push(format!("{name} callgrind: no count"));
            }
            figs[i].instructions = per;
        }
    }

    print_table(&a, &figs, &direct_miss, &direct_mean, &bare_miss);
    if !problems.is_empty() {
        eprintln!("\nproblems:");
        for p in &problems {
            eprintln!("  {p}");
        }
        if a.smoke {
            std::process::exit(1);
        }
    }
}

fn print_table(a: &Args, f: &[Figures], direct: &[f64], direct_mean: &[f64], bare: &[f64]) {
    let (n, v, p) = (&f[0], &f[1], &f[2]);
    let fmt = |x: f64, unit: &str| if x.is_finite() { format!("{x:.0}{unit}") } else { "-".into() };
    let ms = |x: f64| if x.is_finite() { format!("{x:.2} ms") } else { "-".into() };
    let ratio = |pv: f64, nv: f64| if pv.is_finite() && nv.is_finite() && nv > 0.0 { format!("{:.2}", pv / nv) } else { "-".into() };
    // Rounds alternate the servers, so round i of Portier is paired with round i of nginx: the
    // ratio's median and range over rounds, not one ratio of two medians.
    let ratios = |pv: &[f64], nv: &[f64]| {
        let r: Vec<f64> = pv.iter().zip(nv).filter(|(p, n)| p.is_finite() && n.is_finite() && **n > 0.0).map(|(p, n)| p / n).collect();
        if r.is_empty() {
            return "-".to_string();
        }
        let (lo, hi) = r.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        if r.len() == 1 {
            format!("{:.2}", r[0])
        } else {
            format!("{:.2} ({lo:.2}–{hi:.2})", median(&r))
        }
    };
    let spread = |v: &[f64], as_ms: bool| {
        let m = median(v);
        if !m.is_finite() {
            return "-".to_string();
        }
        let (lo, hi) = v.iter().filter(|x| x.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        match (as_ms, v.len() > 1) {
            (false, true) => format!("{m:.0} ({lo:.0}–{hi:.0})"),
            (false, false) => format!("{m:.0}"),
            (true, true) => format!("{m:.2} ms ({lo:.2}–{hi:.2})"),
            (true, false) => format!("{m:.2} ms"),
        }
    };
    // A row of per-round figures: each server's median (range), and Portier / nginx per round.
    let rounds_row = |label: &str, get: &dyn Fn(&Figures) -> &Vec<f64>, as_ms: bool| {
        println!(
            "| {label} | {} | {} | {} | {} |",
            spread(get(n), as_ms),
            spread(get(v), as_ms),
            spread(get(p), as_ms),
            ratios(get(p), get(n))
        );
    };
    println!(
        "\nmedians (and ranges) of {} round(s) of {} s, wrk -t1 -c{} / h2load -t1 -c{} -m4, each server pinned to CPU {} with one worker;\n\
         the last column is Portier / nginx per round (median and range):\n",
        a.rounds,
        a.seconds,
        a.connections,
        (a.connections / 4).max(1),
        a.cpu
    );
    println!("| scenario | nginx `proxy_cache` | Varnish | Portier | Portier / nginx |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, get: &dyn Fn(&Figures) -> f64, unit: &str, as_ms: bool| {
        let cell = |x: f64| if as_ms { ms(x) } else { fmt(x, unit) };
        println!("| {label} | {} | {} | {} | {} |", cell(get(n)), cell(get(v)), cell(get(p)), ratio(get(p), get(n)));
    };
    if !n.hit2k.is_empty() {
        rounds_row("2 KB hit, req/s", &|x| &x.hit2k, false);
        rounds_row("2 KB hit, p99", &|x| &x.hit2k_p99, true);
    }
    if !n.hit100k.is_empty() {
        rounds_row("100 KB hit, req/s", &|x| &x.hit100k, false);
        rounds_row("100 KB hit, p99", &|x| &x.hit100k_p99, true);
    }
    if !n.tls2k.is_empty() {
        rounds_row("2 KB hit over TLS (HTTP/1.1, wrk), req/s", &|x| &x.tls2k, false);
        rounds_row("2 KB hit over TLS (HTTP/1.1), p99", &|x| &x.tls2k_p99, true);
    }
    if !n.h2_2k.is_empty() {
        rounds_row("2 KB hit over HTTP/2 (h2load), req/s", &|x| &x.h2_2k, false);
        rounds_row("2 KB hit over HTTP/2, mean latency", &|x| &x.h2_2k_mean, true);
    }
    if !n.miss.is_empty() {
        let d = median(direct);
        rounds_row(&format!("miss (`no-store`), req/s (origin direct: {d:.0})"), &|x| &x.miss, false);
        if !bare.is_empty() {
            // Not a server of the table: Pingora alone, in the Portier column, for the floor.
            println!(
                "| miss through Pingora alone (`bare-pingora`, no hooks), req/s | | | {} | {} (Portier / bare: {}) |",
                spread(bare, false),
                ratios(bare, &n.miss),
                ratios(&p.miss, bare)
            );
        }
        let dm = median(direct_mean);
        row(&format!("miss, mean latency added over direct ({dm:.2} ms)"), &|x| median(&x.miss_mean) - dm, "", true);
    }
    if let (Some(nm), Some(vm), Some(pm)) = (&n.memory, &v.memory, &p.memory) {
        let disk = if nm.1 > 0.0 { format!(" (+{:.0} B on disk)", nm.1) } else { String::new() };
        println!(
            "| resident memory per cached 2 KB object ({} objects) | {:.0} B{disk} | {:.0} B | {:.0} B | |",
            a.objects, nm.0, vm.0, pm.0
        );
    }
    if !n.coalesce.is_empty() {
        let c = |x: &Figures| {
            let worst = x.coalesce.iter().map(|c| c.0).max().unwrap_or(0);
            let slow = median(&x.coalesce.iter().map(|c| c.1).collect::<Vec<_>>());
            format!("{worst} / {slow:.0} ms")
        };
        println!("| 64 clients on a cold 50 ms URL: origin requests (most) / slowest client (median) | {} | {} | {} | |", c(n), c(v), c(p));
    }
    if let (Some(ni), Some(pi)) = (n.instructions, p.instructions) {
        println!("| user-space instructions per 2 KB hit (callgrind) | {ni:.0} | | {pi:.0} | {} |", ratio(pi, ni));
    }
}

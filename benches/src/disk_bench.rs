//! `disk-bench`: the disk tier (`[cache.disk]`, issue 26) against the memory tier and nginx
//! `proxy_cache`, and what a restart with many entries on disk costs.
//!
//! - Hits, 2 KB and 100 KB: `--urls` distinct URLs (2,000 and 400), all stored first, then
//!   `wrk -c64` asking them at random: from nginx `proxy_cache` (files served from the page
//!   cache), Portier with room in memory for them all, and Portier with memory for a handful
//!   (64 KiB), so nearly every request reads its file from the disk tier. Rounds alternate
//!   the three; every run fails if the origin is asked during it.
//! - Restart: `--objects` 2 KB entries written to disk, Portier stopped (SIGTERM) and
//!   started again: time to listening, to the end of the start-up scan, to the first disk
//!   hit; resident memory per entry held on disk (the index), against a start on an empty
//!   directory.
//!
//! `cargo run --release -p portier-benches --bin disk-bench -- [--rounds 5] [--seconds 3] [--objects 100000]`
//! (`make bench-disk`; needs nginx-light and wrk). Each server is pinned to CPU 1, wrk and the
//! origin to CPU 0.

mod common;
mod static_origin;
use common::{free_port, median, millis, read_response};
use static_origin::StaticOrigin;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

struct Args {
    portier: String,
    rounds: usize,
    seconds: u64,
    objects: usize,
}

fn args() -> Args {
    let mut a = Args { portier: "target/release/portier".into(), rounds: 5, seconds: 3, objects: 100_000 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--portier" => a.portier = val,
            "--rounds" => a.rounds = val.parse().unwrap_or(5),
            "--seconds" => a.seconds = val.parse().unwrap_or(3),
            "--objects" => a.objects = val.parse().unwrap_or(100_000),
            _ => {
                eprintln!("usage: disk-bench [--portier PATH] [--rounds N] [--seconds N] [--objects N]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("portier-disk-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct Running {
    child: Child,
    public: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

/// Portier on CPU 1 with one thread, `cache` as its `[cache]` section(s).
fn portier(bin: &str, origin: SocketAddr, dir: &std::path::Path, cache: &str) -> (Running, Instant) {
    let cfg = format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n[server]\nthreads = 1\n{cache}\n[upstreams.api]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"api\"\n"
    );
    let path = dir.join("portier.toml");
    std::fs::write(&path, cfg).expect("write config");
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let log = dir.join(format!("stdout-{}.log", STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let started = Instant::now();
    let child = Command::new("taskset")
        .args(["-c", "1", bin, "run", "--config"])
        .arg(&path)
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .stderr(Stdio::null())
        .spawn()
        .expect("portier starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("\"event\":\"listening\"")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "portier did not start");
        std::thread::sleep(Duration::from_millis(2));
    };
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening event");
    let public = v["public"].as_str().and_then(|s| s.parse().ok()).expect("public address");
    let admin = v["admin"].as_str().and_then(|s| s.parse().ok());
    (Running { child, public, admin }, started)
}

fn nginx(origin: SocketAddr, dir: &std::path::Path) -> Running {
    let d = dir.display();
    let addr = free_port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           proxy_cache_path {d}/cache levels=1:2 keys_zone=c:64m max_size=4g;\n  upstream o {{ server {origin}; keepalive 64; }}\n\
           server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://o;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache c;\n      proxy_cache_lock on;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let child = Command::new("taskset")
        .args(["-c", "1", "nginx", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    Running { child, public: addr, admin: None }
}

async fn wait_up(addr: SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} did not come up");
}

/// GETs every path once over `conns` keep-alive connections; false if one failed.
async fn fetch_all(addr: SocketAddr, paths: Vec<String>, conns: usize) -> bool {
    let paths = std::sync::Arc::new(paths);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (paths, next) = (paths.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
            let mut buf = vec![0u8; 256 * 1024];
            let mut filled = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = paths.get(i) else { return true };
                let req = format!("GET {p} HTTP/1.1\r\nHost: bench\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() || !read_response(&mut s, &mut buf, &mut filled).await {
                    return false;
                }
            }
        }));
    }
    let mut ok = true;
    for t in tasks {
        ok &= t.await.unwrap_or(false);
    }
    ok
}

/// One GET's head, lower-cased (Host: bench).
async fn head_of(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = head_and_body(admin, "/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(-1.0)
}

/// The admin listener answers loopback names only (a DNS-rebinding guard).
async fn head_and_body(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
    String::from_utf8_lossy(&out).to_string()
}

async fn wait_metric(admin: SocketAddr, series: &str, want: f64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if metric(admin, series).await >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// wrk at random over `n` URLs `prefix{i}`: (req/s, p99 ms, errors).
fn wrk_random(addr: SocketAddr, prefix: &str, n: usize, seconds: u64, dir: &std::path::Path) -> (f64, f64, u64) {
    let script = dir.join("random.lua");
    std::fs::write(
        &script,
        format!(
            "math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", \"{prefix}\" .. math.random(0, {}), {{ Host = \"bench\" }})\nend\n",
            n - 1
        ),
    )
    .expect("wrk script");
    let out = Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (mut rps, mut p99, mut errors) = (0.0, f64::NAN, 0u64);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().unwrap_or(0.0),
            ["99%", v] => p99 = millis(v),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    (rps, p99, errors)
}

fn spread(v: &[f64]) -> String {
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    format!("{:.0} ({lo:.0}–{hi:.0})", median(v))
}

fn ratios(a: &[f64], b: &[f64]) -> String {
    let r: Vec<f64> = a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect();
    let (lo, hi) = r.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    format!("{:.2} ({lo:.2}–{hi:.2})", median(&r))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    for (tool, pkg) in [("nginx", "nginx-light"), ("wrk", "wrk")] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().map_or(true, |s| !s.success()) {
            eprintln!("{tool} is missing: apt-get install -y {pkg}");
            std::process::exit(1);
        }
    }
    let _ = Command::new("taskset").args(["-a", "-p", "-c", "0", &std::process::id().to_string()]).stdout(Stdio::null()).status();
    let origin = StaticOrigin::start().await;
    let mut problems = Vec::new();

    // Hits: nginx, memory, disk; 2 KB and 100 KB URLs.
    let scenarios = [("2 KB", "/obj/", 2000usize), ("100 KB", "/100k?i=", 400usize)];
    let mut figures = vec![[Vec::new(), Vec::new(), Vec::new()]; scenarios.len()];
    let mut p99s = vec![[Vec::new(), Vec::new(), Vec::new()]; scenarios.len()];
    for round in 0..a.rounds {
        for (s, (label, prefix, n)) in scenarios.iter().enumerate() {
            let paths: Vec<String> = (0..*n).map(|i| format!("{prefix}{i}")).collect();
            for (k, name) in ["nginx", "memory", "disk"].iter().enumerate() {
                let dir = tmpdir(&format!("{round}-{s}-{name}"));
                let server = match *name {
                    "nginx" => nginx(origin.addr, &dir),
                    "memory" => portier(&a.portier, origin.addr, &dir, "[cache]\nmax_size = \"1GiB\"\n").0,
                    _ => {
                        let cache = format!(
                            "[cache]\nmax_size = \"256KiB\"\nmax_object_size = \"128KiB\"\n[cache.disk]\npath = \"{}\"\nmax_size = \"1GiB\"\n",
                            dir.join("disk").display()
                        );
                        portier(&a.portier, origin.addr, &dir, &cache).0
                    }
                };
                wait_up(server.public).await;
                let filled = fetch_all(server.public, paths.clone(), 8).await;
                if let Some(admin) = server.admin.filter(|_| *name == "disk") {
                    if !wait_metric(admin, "cache_disk_entries ", *n as f64, Duration::from_secs(60)).await {
                        problems.push(format!("{label} disk: not every entry reached the disk"));
                    }
                }
                let before = origin.total();
                let (rps, p99, errors) = wrk_random(server.public, prefix, *n, a.seconds, &dir);
                let asked = origin.total() - before;
                if !filled || asked > 0 || errors > 0 || rps <= 0.0 {
                    problems.push(format!(
                        "{label} {name} round {round}: filled {filled}, {asked} origin requests during the run, {errors} errors"
                    ));
                }
                let disk_hits = match server.admin.filter(|_| *name == "disk") {
                    Some(admin) => format!(", {:.0} disk hits", metric(admin, "cache_disk_lookups_total{result=\"hit\"}").await),
                    None => String::new(),
                };
                println!("round {round} {label:>6} {name:>6}: {rps:>8.0} req/s, p99 {p99:.2} ms{disk_hits}");
                figures[s][k].push(rps);
                p99s[s][k].push(p99);
                drop(server);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    // Restart with many entries on disk.
    let dir = tmpdir("restart");
    let disk = dir.join("disk");
    let cache = format!("[cache.disk]\npath = \"{}\"\nmax_size = \"4GiB\"\n", disk.display());
    let empty_dir = tmpdir("empty");
    let empty_cache = format!("[cache.disk]\npath = \"{}\"\n", empty_dir.join("disk").display());
    let (empty, _) = portier(&a.portier, origin.addr, &empty_dir, &empty_cache);
    wait_up(empty.public).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let empty_rss = rss_kib(empty.child.id());
    drop(empty);
    let (filler, _) = portier(&a.portier, origin.addr, &dir, &cache);
    let paths: Vec<String> = (0..a.objects).map(|i| format!("/obj/{i}")).collect();
    let fill_started = Instant::now();
    let filled = fetch_all(filler.public, paths, 32).await;
    let admin = filler.admin.expect("admin");
    let on_disk = wait_metric(admin, "cache_disk_entries ", a.objects as f64, Duration::from_secs(300)).await;
    let disk_bytes = metric(admin, "cache_disk_bytes ").await;
    println!("filled {} entries in {:.1} s ({} B on disk)", a.objects, fill_started.elapsed().as_secs_f64(), disk_bytes);
    if !filled || !on_disk {
        problems.push(format!("restart: filled {filled}, all on disk {on_disk}"));
    }
    drop(filler);
    let (again, started) = portier(&a.portier, origin.addr, &dir, &cache);
    let listening = started.elapsed();
    let admin = again.admin.expect("admin");
    let probe = format!("/obj/{}", a.objects / 2);
    let mut first_hit = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while first_hit.is_none() && Instant::now() < deadline {
        if metric(admin, "cache_disk_scan_done ").await >= 1.0 {
            let before = origin.total();
            let head = head_of(again.public, &probe).await;
            if head.contains("detail=disk") && origin.total() == before && origin.hits(&probe) == 1 {
                first_hit = Some(started.elapsed());
            } else {
                problems.push(format!("restart: the first request after the scan was not a disk hit: {head}"));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let scanned = metric(admin, "cache_disk_entries ").await;
    let rss = rss_kib(again.child.id());
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty_dir);

    println!(
        "\nmedians (and ranges) of {} alternating rounds of {} s, wrk -t1 -c64 at random over the URLs, each server pinned to CPU 1 (one worker);\n\
         disk: Portier with 256 KiB of memory, so nearly every request reads its file from the disk tier:\n",
        a.rounds, a.seconds
    );
    println!("| scenario | nginx `proxy_cache` | Portier, memory | Portier, disk tier | disk / memory | disk / nginx |");
    println!("|---|---|---|---|---|---|");
    for (s, (label, _, n)) in scenarios.iter().enumerate() {
        let f = &figures[s];
        println!(
            "| {label} hits over {n} URLs, req/s | {} | {} | {} | {} | {} |",
            spread(&f[0]),
            spread(&f[1]),
            spread(&f[2]),
            ratios(&f[2], &f[1]),
            ratios(&f[2], &f[0])
        );
        let p = &p99s[s];
        println!("| {label} hits, p99 ms | {:.2} | {:.2} | {:.2} | | |", median(&p[0]), median(&p[1]), median(&p[2]));
    }
    println!(
        "\nrestart with {} entries on disk ({:.0} MB): listening after {:.0} ms, scan done and first disk hit after {}; \
         {scanned:.0} entries read back; resident memory {} KiB vs {} KiB on an empty directory: {:.0} B per entry on disk",
        a.objects,
        disk_bytes / 1e6,
        listening.as_secs_f64() * 1000.0,
        first_hit.map_or("-".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
        rss,
        empty_rss,
        (rss.saturating_sub(empty_rss) * 1024) as f64 / a.objects as f64
    );
    if !problems.is_empty() {
        eprintln!("\nproblems:");
        for p in &problems {
            eprintln!("  {p}");
        }
        std::process::exit(1);
    }
}

//! Cache hits: Portier against nginx (proxy_cache) and Varnish, each pinned to the same
//! single CPU, in front of the same sample origin, hammered on one cached URL by the same
//! keep-alive load generator. Rounds alternate the three; medians are printed.
//!
//! Usage: `vs-bench [--portier target/release/portier] [--rounds 3] [--seconds 4] [--connections 32] [--cpu 1]`
//! Needs nginx and varnishd (`apt-get install nginx-light varnish`; `make bench-vs` installs them).

mod common;
use common::{load, start_proxy};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child, std::path::PathBuf);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vs-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn nginx(origin: SocketAddr, cpu: &str) -> (Killed, SocketAddr) {
    let dir = tmpdir("nginx");
    let addr = free_port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           proxy_cache_path {d}/cache levels=1:2 keys_zone=c:10m max_size=256m;\n  upstream o {{ server {origin}; keepalive 16; }}\n\
           server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://o;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_cache c;\n      add_header X-Cache $upstream_cache_status;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let child = Command::new("taskset")
        .args(["-c", cpu, "nginx", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts (apt-get install nginx-light)");
    (Killed(child, dir), addr)
}

fn varnish(origin: SocketAddr, cpu: &str) -> (Killed, SocketAddr) {
    let dir = tmpdir("varnish");
    let addr = free_port();
    let child = Command::new("taskset")
        .args(["-c", cpu, "varnishd", "-F", "-j", "none", "-a"])
        .arg(addr.to_string())
        .arg("-b")
        .arg(origin.to_string())
        .arg("-n")
        .arg(&dir)
        .args(["-s", "malloc,256m", "-p", "thread_pools=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("varnishd starts (apt-get install varnish)");
    (Killed(child, dir), addr)
}

async fn wait_up(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} did not come up");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut portier = "target/release/portier".to_string();
    let (mut rounds, mut seconds, mut connections, mut cpu) = (3usize, 4u64, 32usize, "1".to_string());
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--portier", Some(v)) => portier = v.clone(),
            ("--rounds", Some(v)) => rounds = v.parse().unwrap_or(rounds),
            ("--seconds", Some(v)) => seconds = v.parse().unwrap_or(seconds),
            ("--connections", Some(v)) => connections = v.parse().unwrap_or(connections),
            ("--cpu", Some(v)) => cpu = v.clone(),
            _ => {
                eprintln!("usage: vs-bench [--portier PATH] [--rounds N] [--seconds N] [--connections N] [--cpu N]");
                std::process::exit(2);
            }
        }
    }
    let origin = portier::demo::Origin::start("127.0.0.1:0".parse().expect("addr")).await.expect("origin");
    let names = ["portier", "nginx", "varnish"];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            let (guard, addr): (Box<dyn std::any::Any>, SocketAddr) = match *name {
                "portier" => {
                    let tel = "[telemetry]\nmetrics = false\n[telemetry.access_log]\nformat = \"off\"\n";
                    let p = start_proxy(&portier, origin.addr, tel, &format!("vs{round}"));
                    // Same single CPU as the others.
                    let _ =
                        Command::new("taskset").args(["-a", "-p", "-c", &cpu, &p.child.id().to_string()]).stdout(Stdio::null()).status();
                    let a = p.public;
                    (Box::new(p), a)
                }
                "nginx" => {
                    let (k, a) = nginx(origin.addr, &cpu);
                    (Box::new(k), a)
                }
                _ => {
                    let (k, a) = varnish(origin.addr, &cpu);
                    (Box::new(k), a)
                }
            };
            wait_up(addr).await;
            load(addr, 4, 1).await;
            let rps = load(addr, connections, seconds).await;
            println!("round {round} {name:>8}: {rps:>10.0} req/s");
            rates[i].push(rps);
            drop(guard);
        }
    }
    println!("\nmedian over {rounds} rounds of {seconds} s, {connections} keep-alive connections, each proxy pinned to CPU {cpu}:");
    let base = median(rates[0].clone());
    for (i, name) in names.iter().enumerate() {
        let m = median(rates[i].clone());
        println!("  {name:>8}: {m:>8.0} req/s ({:.2}x Portier)", m / base);
    }
    println!("  origin requests: {}", origin.state.total());
}

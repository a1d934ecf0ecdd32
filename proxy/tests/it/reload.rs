//! Configuration reload under load: SIGHUP and `portier reload` swap routes and pools
//! without failing a request, dropping a keep-alive connection or emptying the cache; an
//! invalid file is refused and the running configuration stays.

use crate::common::scripted::{Reply, Scripted};
use crate::common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn named_origin(name: &'static str) -> Scripted {
    Scripted::start(move |req, _| {
        let cc = if req.target.starts_with("/cached") { "public, max-age=600" } else { "no-store" };
        Reply::new(200, &[("cache-control", cc)], name)
    })
    .await
}

fn config(public: std::net::SocketAddr, admin: std::net::SocketAddr, origin: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        "[listen]\npublic = \"{public}\"\nadmin = \"{admin}\"\n[upstreams.o]\naddresses = [\"{origin}\"]\n{extra_route}\n[[routes]]\npath = \"/*\"\npool = \"o\"\n"
    )
}

fn portier_reload(p: &Portier) -> std::process::Output {
    std::process::Command::new(bin()).args(["reload", "--admin", &p.admin.to_string()]).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_reloads_under_load_fail_no_request_and_keep_the_cache() {
    let (a, b) = (named_origin("A").await, named_origin("B").await);
    let (public, admin) = (free_port(), free_port());
    let p = Portier::start(&config(public, admin, a.addr, ""));
    assert_eq!(get(p.public, "/cached").await.text(), "A");
    assert_eq!(get(p.public, "/cached").await.header("x-cache"), "HIT");

    // Four keep-alive clients, each on one connection for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(public).await.unwrap();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                match keep_alive_get(&mut s, public, "/live").await {
                    Some((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        s = tokio::net::TcpStream::connect(public).await.unwrap();
                        0
                    }
                };
            }
        }));
    }

    for i in 0..10 {
        let (origin, name) = if i % 2 == 0 { (b.addr, "B") } else { (a.addr, "A") };
        let extra = format!("[[routes]]\npath = \"/only-{i}\"\npool = \"o\"\n");
        std::fs::write(p.config_path(), config(public, admin, origin, &extra)).unwrap();
        if i % 2 == 0 {
            p.signal(libc::SIGHUP);
        } else {
            let out = portier_reload(&p);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reloaded");
        }
        let swapped = eventually(Duration::from_secs(5), async || get(p.public, "/now").await.text() == name).await;
        assert!(swapped, "reload {i}: the new pool answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reloads under load: {ok} requests answered, {failed} failed");
    assert!(ok > 100, "the load ran: {ok}");
    assert_eq!(failed, 0, "no request failed and no keep-alive connection was dropped");

    let r = get(p.public, "/cached").await;
    assert_eq!((r.header("x-cache"), r.text()), ("HIT", "A".to_string()), "the cache survived ten reloads");
    assert_eq!(a.count("/cached"), 1);
    let reloaded = p.stdout_lines().iter().filter(|l| l.contains("\"event\":\"config_reloaded\"")).count();
    assert_eq!(reloaded, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_file_is_refused_and_the_running_configuration_stays() {
    let (a, b) = (named_origin("A").await, named_origin("B").await);
    let (public, admin) = (free_port(), free_port());
    let p = Portier::start(&config(public, admin, a.addr, ""));
    let broken = config(public, admin, b.addr, "[[routes]]\npath = \"/x/*\"\npool = \"missing\"\n")
        .replace("[upstreams.o]", "[upstreams.o]\nmax_fails = -1");
    std::fs::write(p.config_path(), broken).unwrap();
    let out = portier_reload(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("upstreams.o.max_fails") && err.contains("routes[0].pool"), "every problem, with its key: {err}");
    p.signal(libc::SIGHUP);
    let refused = eventually(Duration::from_secs(5), async || {
        p.stdout_lines().iter().filter(|l| l.contains("\"event\":\"config_reload_refused\"")).count() == 2
    })
    .await;
    assert!(refused, "{:?}", p.stdout_lines());
    assert_eq!(get(p.public, "/x/y").await.text(), "A", "the old configuration still runs");

    // A start-up key that changed is named, and keeps its running value.
    std::fs::write(
        p.config_path(),
        config(public, admin, b.addr, "").replace("[upstreams.o]", "[cache]\nmax_size = \"16MiB\"\n[upstreams.o]"),
    )
    .unwrap();
    let out = portier_reload(&p);
    assert!(String::from_utf8_lossy(&out.stdout).contains("until a restart: cache.max_size"), "{out:?}");
    assert_eq!(get(p.public, "/y").await.text(), "B");
}

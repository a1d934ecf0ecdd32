//! What the origin (or a cache behind) says about itself survives Portier: `Cache-Status` and
//! `Server-Timing` are lists Portier appends to, `X-Cache` of a front that only passes
//! requests on is its backend's, and `Via` names every hop both ways.

use crate::common::client::{Front, Proto};
use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;

/// An origin that is itself a cache and times its own work, as the API does (`db;dur=53`).
async fn talkative_origin() -> Scripted {
    Scripted::start(|req, n| {
        let cc = if req.target.starts_with("/nostore") { "no-store" } else { "public, max-age=60" };
        Reply::new(
            200,
            &[
                ("cache-control", cc),
                ("cache-status", "origin-cache; fwd=uri-miss"),
                ("server-timing", "db;dur=53, app;dur=47.2"),
                ("x-cache", "MISS from origin-cache"),
                ("via", "1.1 origin-cache"),
            ],
            format!("n={n}"),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_origins_cache_status_and_server_timing_are_kept_and_via_names_each_hop() {
    let o = talkative_origin().await;
    let f = Front::start(&config_for(o.addr, "", ""));
    for proto in Proto::ALL {
        let path = format!("/page/{}", proto.name());
        let miss = f.get(proto, &path, &[]).await;
        assert_eq!((miss.status, miss.text().as_str(), miss.header("x-cache")), (200, "n=1", "MISS"), "{proto:?}");
        assert_eq!(miss.header("cache-status"), "origin-cache; fwd=uri-miss, portier; fwd=miss; fwd-status=200; stored", "{proto:?}");
        let timing = miss.header("server-timing");
        assert!(timing.starts_with("db;dur=53, app;dur=47.2, cache;desc=\"MISS\", origin;dur="), "{proto:?}: {timing}");
        assert_eq!(miss.header("via"), "1.1 origin-cache, 1.1 portier", "{proto:?}");
        let seen = o.last(&path).expect("asked");
        let client_version = proto.version();
        assert_eq!(
            seen.header("via"),
            Some(format!("{client_version} portier").as_str()),
            "{proto:?}: the request says how the client spoke"
        );

        let hit = f.get(proto, &path, &[]).await;
        assert_eq!((hit.text().as_str(), hit.header("x-cache")), ("n=1", "HIT"), "{proto:?}");
        assert_eq!(o.count(&path), 1, "{proto:?}: a hit");
        let cs = hit.header("cache-status");
        assert!(cs.starts_with("origin-cache; fwd=uri-miss, portier; hit; ttl="), "{proto:?}: the stored member stays, ours is last: {cs}");
        assert_eq!(hit.header("server-timing"), "cache;desc=\"HIT\"", "{proto:?}: the stored timings were another request's");
        assert_eq!(hit.header("via"), "1.1 origin-cache, 1.1 portier", "{proto:?}: ours once, not stored");

        // Uncacheable: the origin's timings of this very request, then Portier's.
        let path = format!("/nostore/{}", proto.name());
        let pass = f.get(proto, &path, &[("via", "1.0 corp-proxy")]).await;
        assert_eq!(
            pass.header("cache-status"),
            "origin-cache; fwd=uri-miss, portier; fwd=bypass; fwd-status=200; detail=no-store",
            "{proto:?}"
        );
        assert!(pass.header("server-timing").starts_with("db;dur=53, app;dur=47.2, cache;desc=\"BYPASS\""), "{proto:?}: {pass:?}");
        let seen = o.last(&path).expect("asked");
        assert_eq!(
            seen.header("via"),
            Some(format!("1.0 corp-proxy, {client_version} portier").as_str()),
            "{proto:?}: appended to the client's"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_front_without_cache_shows_its_replicas_answer() {
    let o = talkative_origin().await;
    let replica = Portier::start(&config_for(o.addr, "", "[server]\nname = \"replica-1\""));
    let front = Portier::start(&format!(
        "[server]\nname = \"front\"\n[cache]\nenabled = false\n[upstreams.r]\naddresses = [\"{}\"]\n[[routes]]\npath = \"/*\"\npool = \"r\"\ncompress = []\n",
        replica.public
    ));
    let first = get_with(front.public, "/shared", &[("host", "a.test")]).await;
    assert_eq!(first.header("x-cache"), "MISS", "the replica's answer, not the front's BYPASS: {first:?}");
    assert_eq!(
        first.header("cache-status"),
        "origin-cache; fwd=uri-miss, replica-1; fwd=miss; fwd-status=200; stored, front; fwd=bypass; fwd-status=200",
        "{first:?}"
    );
    let second = get_with(front.public, "/shared", &[("host", "a.test")]).await;
    assert_eq!((second.header("x-cache"), second.text().as_str()), ("HIT", "n=1"), "{second:?}");
    assert_eq!(o.count("/shared"), 1);
    let cs = second.header("cache-status");
    assert!(
        cs.starts_with("origin-cache; fwd=uri-miss, replica-1; hit; ttl=") && cs.ends_with(", front; fwd=bypass; fwd-status=200"),
        "{cs}"
    );
    assert_eq!(second.header("via"), "1.1 origin-cache, 1.1 replica-1, 1.1 front");
    assert_eq!(o.last("/shared").and_then(|s| s.header("via").map(str::to_string)).as_deref(), Some("1.1 front, 1.1 replica-1"));
    // A cache that took part speaks for itself: the front's own status wins when it caches.
    let caching_front = Portier::start(&format!(
        "[server]\nname = \"front\"\n[upstreams.r]\naddresses = [\"{}\"]\n[[routes]]\npath = \"/*\"\npool = \"r\"\ncompress = []\n",
        replica.public
    ));
    let r = get_with(caching_front.public, "/shared", &[("host", "a.test")]).await;
    assert_eq!(r.header("x-cache"), "MISS", "the front's miss (its backend's HIT is in Cache-Status): {r:?}");
    let cs = r.header("cache-status");
    assert!(cs.contains("replica-1; hit; ttl=") && cs.ends_with("front; fwd=miss; fwd-status=200; stored"), "{r:?}");
    assert_eq!(o.count("/shared"), 1, "the replica answered from its cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn via_can_be_turned_off_and_a_bad_name_is_a_config_error() {
    let o = talkative_origin().await;
    let p = Portier::start(&config_for(o.addr, "", "[server]\nvia = false"));
    let r = get(p.public, "/quiet").await;
    assert_eq!(r.header("via"), "1.1 origin-cache", "the origin's kept, none added: {r:?}");
    assert_eq!(o.last("/quiet").and_then(|s| s.header("via").map(str::to_string)), None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config_for(o.addr, "", "[server]\nname = \"two words\"")).unwrap();
    let out = std::process::Command::new(bin()).arg("check").arg("--config").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("server.name") && text.contains("not a name for headers"), "{text}");
}

/// The scaled stack as Prometheus sees it: the front (no cache, `service_name="proxy-front"`)
/// counts no cache answers, the replica counts each once, and the replica, trusting the
/// front, sees the client's address.
#[tokio::test(flavor = "multi_thread")]
async fn a_front_and_its_replica_count_each_request_once() {
    let o = talkative_origin().await;
    let replica = Portier::start_with_env(&config_for(o.addr, "", ""), &[("PORTIER_TRUSTED_PROXIES", "127.0.0.1/32")]);
    let front_toml = std::fs::read_to_string(root().join("config/front.toml"))
        .unwrap()
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        // Its health checks are requests too; this test counts the client's alone.
        .replace("health_check = { path = \"/health\", interval = \"2s\", timeout = \"1s\" }", "");
    let front = Portier::start_with_env(&front_toml, &[("PORTIER_UPSTREAM_REPLICAS", &replica.public.to_string())]);
    let client: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    for _ in 0..3 {
        let r = request_from(client, front.public, "GET", "/counted", &[("host", "a.test")], b"").await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(o.count("/counted"), 1);
    let metrics = |p: &Portier| {
        let addr = p.admin;
        async move { get(addr, "/metrics").await.text() }
    };
    let (f, r) = (metrics(&front).await, metrics(&replica).await);
    let total = |text: &str, name: &str| metric_value(text, name).unwrap_or(0.0);
    assert_eq!((total(&f, "cache_hit_total"), total(&f, "cache_miss_total")), (0.0, 0.0), "the front has no cache to count");
    assert_eq!((total(&r, "cache_hit_total"), total(&r, "cache_miss_total")), (2.0, 1.0), "the replica counts each answer");
    assert!(f.contains("service_name=\"proxy-front\""), "the front's own series are apart");
    assert!(r.contains("service_name=\"proxy\""), "the replicas' are the runbook's");
    // The access log line is written once the response is sent: it may trail the answer.
    let logged = || replica.stdout_lines().into_iter().find(|l| l.contains("\"path\":\"/counted\""));
    assert!(eventually(std::time::Duration::from_secs(5), async || logged().is_some()).await, "{:#?}", replica.stdout_lines());
    let line = logged().unwrap_or_default();
    assert!(line.contains("\"client\":\"127.0.0.2\""), "the replica believes the front: {line}");
}

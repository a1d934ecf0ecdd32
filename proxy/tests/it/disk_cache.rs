//! The disk tier (`[cache.disk]`): entries that outlive a restart, whether Portier was stopped
//! or killed; files cut, changed or left half-written never served; a budget that holds; and
//! purges that reach the files, before and across a restart.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::path::Path;
use std::time::Duration;

/// Every path answers `v<n> <path>` (the path's n-th origin request), fresh for an hour, tagged by
/// its first segment.
async fn versioned_origin() -> Scripted {
    Scripted::start(|req, n| {
        let tag = req.target.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
        Reply::new(
            200,
            &[("Cache-Control", "max-age=3600, stale-while-revalidate=600"), ("Content-Type", "text/plain"), ("Cache-Tag", &tag)],
            format!("v{n} {}", req.target),
        )
    })
    .await
}

/// One `Host` across restarts: each start listens on a new port, and the port is part of
/// the URL the entries are stored under.
async fn fetch(p: &Portier, path: &str) -> Resp {
    get_with(p.public, path, &[("Host", "app.test")]).await
}

fn disk_config(origin: &Scripted, dir: &Path, extra: &str) -> String {
    let top = format!("[cache.disk]\npath = \"{}\"\n{extra}\n", dir.display());
    config_for(origin.addr, "", &top)
}

async fn metric(p: &Portier, series: &str) -> f64 {
    metric_value(&get(p.admin, "/metrics").await.text(), series).unwrap_or(-1.0)
}

/// Started, and done reading back what the directory held.
async fn start(origin: &Scripted, dir: &Path, extra: &str) -> Portier {
    let p = Portier::start(&disk_config(origin, dir, extra));
    let scanned = eventually(Duration::from_secs(10), async || metric(&p, "cache_disk_scan_done").await == 1.0).await;
    assert!(scanned, "the start-up scan finished; stderr: {:?}", p.stderr.lock().unwrap());
    p
}

/// Waits until `n` entries are on disk (files are written after the answer).
async fn on_disk(p: &Portier, n: f64) {
    let written = eventually(Duration::from_secs(10), async || metric(p, "cache_disk_entries").await == n).await;
    assert!(written, "{n} entries on disk, saw {}", metric(p, "cache_disk_entries").await);
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir.join("objects")).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_outlive_a_stop_and_a_kill_with_their_age_and_no_origin_request() {
    let dir = tempfile::tempdir().unwrap();
    let origin = versioned_origin().await;
    let mut p = start(&origin, dir.path(), "").await;
    for path in ["/a/1", "/a/2", "/b/1"] {
        assert_eq!(fetch(&p, path).await.header("x-cache"), "MISS");
    }
    on_disk(&p, 3.0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (round, sig) in [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)] {
        p.signal(sig);
        assert!(p.wait_exit(Duration::from_secs(10)).is_some(), "{round}: exited");
        p = start(&origin, dir.path(), "").await;
        assert_eq!(metric(&p, "cache_disk_entries").await, 3.0, "{round}: every file read back");
        for path in ["/a/1", "/a/2", "/b/1"] {
            let r = fetch(&p, path).await;
            assert_eq!(r.status, 200, "{round} {path}");
            assert_eq!(r.header("x-cache"), "HIT", "{round} {path}: {:?}", r.headers);
            assert!(r.header("cache-status").ends_with("; detail=disk"), "{round} {path}: {}", r.header("cache-status"));
            assert!(r.text().starts_with("v") && r.text().ends_with(path), "{round} {path}: the stored body");
            let age: u64 = r.header("age").parse().unwrap();
            assert!(age >= 1, "{round} {path}: the age it had, not 0 ({age})");
            // Now in memory: the next answer does not read the disk again.
            let again = fetch(&p, path).await;
            assert_eq!((again.header("x-cache"), again.header("cache-status").contains("detail=disk")), ("HIT", false));
        }
        assert_eq!(metric(&p, "cache_disk_lookups_total{result=\"hit\"}").await, 3.0, "{round}");
    }
    assert_eq!(origin.seen().len(), 3, "one origin request per URL across two restarts");
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_changed_and_half_written_files_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let origin = versioned_origin().await;
    let p = start(&origin, dir.path(), "").await;
    for path in ["/x/flipped", "/x/truncated", "/x/whole"] {
        fetch(&p, path).await;
    }
    on_disk(&p, 3.0).await;
    drop(p);
    let name_of = |path: &str| {
        files(dir.path())
            .into_iter()
            .find(|f| std::fs::read(f).unwrap().windows(path.len()).any(|w| w == path.as_bytes()))
            .unwrap_or_else(|| panic!("a file for {path}"))
    };
    let flipped = name_of("/x/flipped");
    let mut bytes = std::fs::read(&flipped).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&flipped, bytes).unwrap();
    let truncated = name_of("/x/truncated");
    let len = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(len - 7).unwrap();
    // What a `kill -9` in the middle of a write leaves.
    std::fs::write(dir.path().join("tmp").join("0123-7"), b"PTD1 half a file").unwrap();

    let p = start(&origin, dir.path(), "").await;
    assert_eq!(metric(&p, "cache_disk_discarded_total{reason=\"truncated\"}").await, 1.0);
    assert_eq!(metric(&p, "cache_disk_discarded_total{reason=\"interrupted\"}").await, 1.0);
    assert!(!truncated.exists() && std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none(), "deleted at start");
    let before = origin.seen().len();
    let r = fetch(&p, "/x/flipped").await;
    assert_eq!((r.status, r.header("x-cache")), (200, "MISS"), "a changed byte is a miss, not a hit");
    assert_eq!(r.text(), "v2 /x/flipped", "the origin's second answer for it, not the stored first one");
    assert_eq!(metric(&p, "cache_disk_discarded_total{reason=\"checksum\"}").await, 1.0);
    assert_eq!(metric(&p, "cache_disk_lookups_total{result=\"corrupt\"}").await, 1.0);
    assert_eq!(fetch(&p, "/x/truncated").await.header("x-cache"), "MISS");
    let whole = fetch(&p, "/x/whole").await;
    assert_eq!((whole.header("x-cache"), whole.header("cache-status").ends_with("; detail=disk")), ("HIT", true));
    assert_eq!(origin.seen().len(), before + 2, "the two bad files asked the origin again, the whole one did not");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_leaves_the_entry_in_memory_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let origin = versioned_origin().await;
    let p = start(&origin, dir.path(), "").await;
    // The disk "fills up": the directory files are written in is gone.
    std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
    assert_eq!(fetch(&p, "/w").await.header("x-cache"), "MISS");
    let counted = eventually(Duration::from_secs(5), async || metric(&p, "cache_disk_write_errors_total").await == 1.0).await;
    assert!(counted, "the failed write is counted");
    assert_eq!(fetch(&p, "/w").await.header("x-cache"), "HIT", "served from memory");
    assert_eq!(metric(&p, "cache_disk_entries").await, 0.0);
    assert!(files(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_budget_holds_under_more_urls_than_it_fits() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Scripted::start(|req, _| Reply::new(200, &[("Cache-Control", "max-age=3600")], format!("{:2000}", req.target))).await;
    let p = start(&origin, dir.path(), "max_size = \"64KiB\"\nmax_object_size = \"8KiB\"").await;
    for i in 0..200 {
        assert_eq!(get(p.public, &format!("/many/{i}")).await.status, 200);
    }
    let settled = eventually(Duration::from_secs(10), async || metric(&p, "cache_disk_evictions_total").await > 100.0).await;
    assert!(settled, "evictions: {}", metric(&p, "cache_disk_evictions_total").await);
    let bytes = metric(&p, "cache_disk_bytes").await;
    let on_disk: u64 = files(dir.path()).iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
    println!(
        "disk budget: 200 URLs of ~2.3 KB into 64 KiB: {} entries, {bytes} B indexed, {on_disk} B of files, {} evictions",
        metric(&p, "cache_disk_entries").await,
        metric(&p, "cache_disk_evictions_total").await
    );
    assert!(bytes <= 65536.0 && on_disk <= 65536, "{bytes} B indexed, {on_disk} B on disk");
    assert!(bytes > 32768.0, "the budget is used, not emptied: {bytes}");
    assert_eq!(on_disk as f64, bytes, "the index counts what is on disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn purges_reach_the_files_and_stay_in_force_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origin = versioned_origin().await;
    let rule = "[[invalidation]]\nmethod = \"POST\"\npath = \"/api/sync\"\nprefixes = [\"/api/stats/\"]\nmatch_param = \"username\"\n";
    let p = start(&origin, dir.path(), rule).await;
    let paths = ["/u/1", "/p/1", "/p/2", "/t/1", "/s/1", "/api/stats/summary?username=demo", "/api/stats/summary?username=other"];
    for path in paths {
        fetch(&p, path).await;
    }
    on_disk(&p, paths.len() as f64).await;
    let purge = async |body: &[u8]| {
        let r = request(p.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], body).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(body));
    };
    purge(br#"{"url":"/u/1"}"#).await;
    purge(br#"{"prefix":"/p/"}"#).await;
    purge(br#"{"tag":"t"}"#).await;
    purge(br#"{"url":"/s/1","soft":true}"#).await;
    let r = request(p.public, "POST", "/api/sync?username=demo", &[("Host", "app.test")], b"").await.unwrap();
    assert_eq!(r.status, 200);
    // Hard purges removed the files before answering; the soft one kept its file, stale.
    assert_eq!(metric(&p, "cache_disk_entries").await, 2.0, "/s/1 (stale) and the other user's summary");
    let mut p = p;
    p.signal(libc::SIGKILL);
    p.wait_exit(Duration::from_secs(10));
    let seen = origin.seen().len();
    let p = start(&origin, dir.path(), rule).await;
    for path in ["/u/1", "/p/1", "/p/2", "/t/1", "/api/stats/summary?username=demo"] {
        assert_eq!(fetch(&p, path).await.header("x-cache"), "MISS", "{path} stays purged");
    }
    let kept = fetch(&p, "/api/stats/summary?username=other").await;
    assert_eq!((kept.header("x-cache"), kept.header("cache-status").contains("detail=disk")), ("HIT", true), "another user's data is kept");
    let soft = fetch(&p, "/s/1").await;
    assert_eq!(soft.header("x-cache"), "STALE", "a soft purge is still stale after the restart: {:?}", soft.headers);
    assert!(eventually(Duration::from_secs(5), async || origin.seen().len() == seen + 6).await, "five purged URLs and one refresh");
}

/// The disk tier answers every protocol a client arrives on: memory too small to keep more
/// than a couple of entries, so the first one filled is read back from disk.
#[tokio::test(flavor = "multi_thread")]
async fn disk_hits_on_every_protocol() {
    use crate::common::client::{Front, Proto};
    let dir = tempfile::tempdir().unwrap();
    let origin = Scripted::start(|req, n| Reply::new(200, &[("Cache-Control", "max-age=3600")], format!("v{n} {:3000}", req.target))).await;
    let top = format!("[cache]\nmax_size = \"8KiB\"\nmax_object_size = \"4KiB\"\n[cache.disk]\npath = \"{}\"\n", dir.path().display());
    let f = Front::start(&config_for(origin.addr, "", &top));
    let mut written = 0.0;
    for (round, proto) in Proto::ALL.into_iter().enumerate() {
        for i in 1..=4 {
            // Paths of their own: HTTP/1.1 over TLS and HTTP/2 share a listener, so keys.
            let r = f.get(proto, &format!("/d/{round}/{i}"), &[]).await;
            assert_eq!((r.status, r.header("x-cache")), (200, "MISS"), "{} /d/{round}/{i}", proto.name());
        }
        written += 4.0;
        let p = &f.portier;
        on_disk(p, written).await;
        let stats = get(p.admin, "/cache/stats").await.json();
        assert!(stats["entries"].as_u64().unwrap() < 4, "memory could not keep them all: {stats}");
        assert_eq!(stats["tiers"][0]["tier"], "disk");
        assert_eq!(stats["tiers"][0]["entries"].as_f64(), Some(written));
        let r = f.get(proto, &format!("/d/{round}/1"), &[]).await;
        assert_eq!(r.header("x-cache"), "HIT", "{}: {:?}", proto.name(), r.headers);
        assert!(r.header("cache-status").ends_with("; detail=disk"), "{}: {}", proto.name(), r.header("cache-status"));
        assert!(r.text().starts_with(&format!("v1 /d/{round}/1")), "{}: the stored body", proto.name());
    }
    assert_eq!(origin.seen().len(), 4 * Proto::ALL.len(), "four fills per protocol, no origin request for the disk hits");
}

/// With Redis beside it, another replica's purge reaches this replica's disk, not only its
/// memory: the disk is asked before Redis, so a purged copy there would be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_replicas_purge_reaches_this_replicas_disk() {
    use crate::common::redis::Redis;
    let redis = Redis::start().await;
    let origin = versioned_origin().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let extra = format!("[cache.shared]\nurl = \"{}\"\n", redis.url());
    let a = start(&origin, dirs[0].path(), &extra).await;
    let b = start(&origin, dirs[1].path(), &extra).await;
    for p in [&a, &b] {
        let up = eventually(Duration::from_secs(15), async || metric(p, "cache_shared_up").await == 1.0).await;
        assert!(up, "connected to redis");
    }
    assert_eq!(fetch(&b, "/r/1").await.header("x-cache"), "MISS");
    on_disk(&b, 1.0).await;
    let r = request(a.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"prefix":"/r/"}"#).await.unwrap();
    assert_eq!(r.status, 200);
    let gone = eventually(Duration::from_secs(10), async || metric(&b, "cache_disk_entries").await == 0.0).await;
    assert!(gone, "B's file went with A's purge: {} left", metric(&b, "cache_disk_entries").await);
    assert!(files(dirs[1].path()).is_empty());
    let again = fetch(&b, "/r/1").await;
    assert_eq!((again.header("x-cache"), again.text()), ("MISS", "v2 /r/1".to_string()), "purged everywhere");
}

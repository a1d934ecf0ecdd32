//! CPU profiles: the admin pprof endpoint returns a real pprof protobuf, and continuous
//! profiling pushes to a Pyroscope-compatible receiver.

use crate::common::recorder::Recorder;
use crate::common::*;
use pprof::protos::Message;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn pprof_endpoint_returns_a_cpu_profile() {
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    let admin = p.admin;
    let profile = tokio::spawn(async move { request(admin, "GET", "/debug/pprof/profile?seconds=1", &[], b"").await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = get(p.admin, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(busy.status, 409, "one profile at a time: {}", busy.text());
    // Some work to sample meanwhile.
    for _ in 0..200 {
        get(p.public, "/api/stats/summary?username=demo").await;
    }
    let r = profile.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/octet-stream");
    let prof = pprof::protos::Profile::decode(r.body.as_slice()).expect("a pprof protobuf");
    assert!(!prof.sample_type.is_empty());
    assert!(prof.period > 0);
    assert_eq!(get(p.admin, "/debug/pprof/profile?seconds=0").await.status, 400);
    assert_eq!(get(p.admin, "/debug/pprof/profile?seconds=abc").await.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_are_pushed_to_pyroscope_with_the_service_name() {
    let rx = Recorder::start().await;
    let api = origin().await;
    let cfg = format!(
        "[telemetry]\nservice_name = \"proxy\"\n[telemetry.profiling]\npyroscope_url = \"http://{}\"\nupload_interval = \"1s\"\n{}",
        rx.addr,
        two_pool_config(api.addr, api.addr)
    );
    let p = Portier::start(&cfg);
    assert!(eventually(Duration::from_secs(6), async || !rx.seen().is_empty()).await, "a profile was pushed");
    let push = &rx.seen()[0];
    assert_eq!(push.method, "POST");
    assert_eq!(push.path, "/push.v1.PusherService/Push");
    assert_eq!(push.content_type, "application/proto");
    assert!(push.body.len() > 20);
    let body = String::from_utf8_lossy(&push.body);
    assert!(body.contains("service_name") && body.contains("proxy") && body.contains("process_cpu"), "labels in the push");
    // Each window also pushes what the heap holds (jemalloc's in-use space).
    assert!(
        eventually(Duration::from_secs(6), async || rx.seen().iter().any(|p| String::from_utf8_lossy(&p.body).contains("memory"))).await,
        "a heap profile was pushed as Pyroscope's memory type"
    );
    assert!(
        eventually(Duration::from_secs(3), async || {
            metric_value(&get(p.admin, "/metrics").await.text(), "profiles_pushed_total{outcome=\"ok\"}").unwrap_or(0.0) >= 1.0
        })
        .await
    );
    assert_eq!(get(p.admin, "/debug/pprof/profile?seconds=1").await.status, 409, "the push owns the profiler");
}

/// A profile whose client went away stops at once and frees the profiler (it used to run
/// on for its whole duration, answering 409 to everyone else).
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_whose_client_left_stops_and_frees_the_profiler() {
    use tokio::io::AsyncWriteExt;
    let api = origin().await;
    let p = Portier::start(&two_pool_config(api.addr, api.addr));
    let mut s = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    s.write_all(format!("GET /debug/pprof/profile?seconds=60 HTTP/1.1\r\nHost: {}\r\n\r\n", p.admin).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(p.admin, "/debug/pprof/profile?seconds=1").await.status, 409, "the first one runs");
    drop(s);
    let freed = eventually(Duration::from_secs(5), async || get(p.admin, "/debug/pprof/profile?seconds=1").await.status == 200).await;
    assert!(freed, "the abandoned profile stopped and the profiler is free again");
}

/// The image strips debug information but keeps the symbol table (deploy/Dockerfile:
/// `strip --strip-debug`), so CPU profiles taken in the container still name Portier's
/// functions; a fully stripped binary's profile names none of them.
#[tokio::test(flavor = "multi_thread")]
async fn profiles_of_a_binary_stripped_as_in_the_image_name_portiers_functions() {
    let api = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let mut names_by_kind = Vec::new();
    for (kind, args) in [("strip-debug", &["--strip-debug"][..]), ("strip-all", &[][..])] {
        let out = dir.path().join(format!("portier-{kind}"));
        let st = std::process::Command::new("strip").args(args).arg("-o").arg(&out).arg(bin()).status().expect("strip (binutils) runs");
        assert!(st.success());
        let p = Portier::start_binary(&out, &two_pool_config(api.addr, api.addr), &[]);
        let admin = p.admin;
        let profile = tokio::spawn(async move { request(admin, "GET", "/debug/pprof/profile?seconds=1", &[], b"").await.unwrap() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Work to sample for the whole second (bounded: 20,000 requests at most).
        for _ in 0..20_000 {
            if profile.is_finished() {
                break;
            }
            get(p.public, "/api/stats/summary?username=demo").await;
        }
        let r = profile.await.unwrap();
        assert_eq!(r.status, 200);
        let prof = pprof::protos::Profile::decode(r.body.as_slice()).expect("a pprof protobuf");
        let ours = prof.string_table.iter().filter(|s| s.contains("portier::")).count();
        names_by_kind.push((kind, ours, std::fs::metadata(&out).unwrap().len()));
    }
    println!("profile function names from portier:: and binary size: {names_by_kind:?}");
    assert!(names_by_kind[0].1 > 0, "strip --strip-debug keeps the names: {names_by_kind:?}");
    assert_eq!(names_by_kind[1].1, 0, "a full strip loses them: {names_by_kind:?}");
}

/// `/debug/pprof/heap`: jemalloc's sampled heap as a gzipped pprof whose stacks name
/// Portier's allocation sites (here sampled every 16 KiB, `_RJEM_MALLOC_CONF`, instead of
/// the default 4 MiB, so a few MB of cache entries show up).
#[tokio::test(flavor = "multi_thread")]
async fn heap_profiles_decode_and_name_portiers_allocation_sites() {
    use std::io::Read;
    let origin = crate::common::scripted::Scripted::start(|_, _| {
        crate::common::scripted::Reply::new(200, &[("Cache-Control", "max-age=600")], vec![b'h'; 8192])
    })
    .await;
    let p =
        Portier::start_with_env(&crate::common::scripted::config_for(origin.addr, "", ""), &[("_RJEM_MALLOC_CONF", "lg_prof_sample:14")]);
    for i in 0..400 {
        assert_eq!(get(p.public, &format!("/heap/{i}")).await.status, 200);
    }
    let r = get(p.admin, "/debug/pprof/heap").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(r.body.as_slice()).read_to_end(&mut raw).expect("gzipped");
    let prof = pprof::protos::Profile::decode(raw.as_slice()).expect("a pprof protobuf");
    let strings = &prof.string_table;
    let sample_types: Vec<&str> = prof.sample_type.iter().map(|t| strings[t.ty as usize].as_str()).collect();
    assert_eq!(sample_types, ["inuse_space"], "{sample_types:?}");
    assert!(!prof.sample.is_empty(), "sampled allocations");
    let ours: Vec<&String> = strings.iter().filter(|s| s.contains("portier::")).collect();
    println!(
        "heap profile: {} samples, {} portier:: frames, e.g. {:?}",
        prof.sample.len(),
        ours.len(),
        ours.iter().take(3).collect::<Vec<_>>()
    );
    assert!(ours.iter().any(|s| s.contains("portier::cache")), "an allocation site in the cache: {ours:?}");
    assert_eq!(get(p.admin, "/debug/pprof/heap").await.status, 200, "again");
}

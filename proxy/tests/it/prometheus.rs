//! A real Prometheus (Debian package) scrapes a running Portier every second under load; the
//! runbook's queries, with `service_name="proxy"`, and the hit-ratio query return what the
//! traffic says they should.

use crate::common::prom::{query, start_prometheus};
use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn runbook_queries_work_against_portier_for_service_proxy() {
    let o = Scripted::start(|req, _| match req.target.as_str() {
        t if t.starts_with("/err") => Reply::new(503, &[], "down"),
        _ => Reply::new(200, &[("cache-control", "max-age=600")], vec![b'x'; 2048]),
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let prom = start_prometheus(p.admin).await;

    // Bounded load: 4 workers for 4 s; 1 request in 10 is a 5xx, the rest hit 5 cached URLs.
    let deadline = Instant::now() + Duration::from_secs(4);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let addr = p.public;
            tokio::spawn(async move {
                let (mut ok, mut err) = (0u64, 0u64);
                let mut i = 0u64;
                while Instant::now() < deadline && i < 50_000 {
                    let target = if i % 10 == 9 { format!("/err{w}") } else { format!("/hit{}", i % 5) };
                    let r = get(addr, &target).await;
                    if r.status >= 500 {
                        err += 1
                    } else {
                        ok += 1
                    }
                    i += 1;
                }
                (ok, err)
            })
        })
        .collect();
    let (mut ok, mut err) = (0, 0);
    for w in workers {
        let (a, b) = w.await.unwrap();
        ok += a;
        err += b;
    }
    let total = (ok + err) as f64;
    let expected_err = err as f64 / total;
    // Hits: every 2xx except the first request of each of the 5 URLs.
    let expected_hit = (ok as f64 - 5.0) / total;
    println!("load: {ok} ok, {err} 5xx, in 4 s");
    // Let at least three scrapes cover the end of the load.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let rps = query(prom.addr, r#"sum(rate(traces_spanmetrics_calls_total{service_name="proxy"}[1m]))"#).await.expect("RPS");
    let err_rate = query(
        prom.addr,
        r#"sum(rate(traces_spanmetrics_calls_total{service_name="proxy",http_status_code=~"5.."}[5m])) / clamp_min(sum(rate(traces_spanmetrics_calls_total{service_name="proxy"}[5m])), 0.0001)"#,
    )
    .await
    .expect("5xx rate");
    let p95 = query(
        prom.addr,
        r#"histogram_quantile(0.95, sum by (le) (rate(traces_spanmetrics_duration_milliseconds_bucket{service_name="proxy"}[5m])))"#,
    )
    .await
    .expect("p95");
    let p99 = query(
        prom.addr,
        r#"histogram_quantile(0.99, sum by (le) (rate(traces_spanmetrics_duration_milliseconds_bucket{service_name="proxy"}[5m])))"#,
    )
    .await
    .expect("p99");
    let hit_ratio = query(prom.addr, "sum(rate(cache_hit_total[5m])) / (sum(rate(cache_hit_total[5m])) + sum(rate(cache_miss_total[5m])))")
        .await
        .expect("hit ratio");
    let by_status = query(
        prom.addr,
        r#"sum(rate(traces_spanmetrics_calls_total{service_name="proxy",span_kind="SPAN_KIND_SERVER",cache_status="HIT"}[5m]))"#,
    )
    .await
    .expect("HIT rate");
    println!("RPS {rps:.1}, 5xx rate {err_rate:.4} (expected {expected_err:.4}), p95 {p95:.2} ms, p99 {p99:.2} ms, hit ratio {hit_ratio:.4} (expected {expected_hit:.4}), HIT/s {by_status:.1}");
    assert!(rps > 1.0, "RPS {rps}");
    assert!((err_rate - expected_err).abs() < 0.03, "5xx rate {err_rate} vs {expected_err}");
    assert!(p95 > 0.0 && p95 <= 50.0, "p95 {p95} ms: loopback hits are fast, the bucket bound says so");
    assert!(p99 >= p95 && p99 <= 100.0, "p99 {p99}");
    assert!((hit_ratio - expected_hit).abs() < 0.03, "hit ratio {hit_ratio} vs {expected_hit}");
    assert!(by_status > 0.0);
}

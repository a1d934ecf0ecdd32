//! Compression with the cache, over real sockets: one stored variant per coding whatever the
//! `Accept-Encoding` spelling, never compressed twice, bodies that decode to the origin's,
//! per-variant ETags that answer 304, revalidation with the origin's own ETag, a PURGE that
//! drops every variant, and what is never compressed.

use crate::common::scripted::{config_for, Reply, Scripted};
use crate::common::*;
use std::io::Read;
use std::time::Duration;

fn script() -> String {
    (0..400).map(|i| format!("function f{i}(a, b) {{ return a * {i} + b; }}\n")).collect()
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out).map(|_| ()).unwrap(),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out).map(|_| ()).unwrap(),
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

async fn origin() -> Scripted {
    Scripted::start(|req, n| {
        let js = script();
        match req.target.as_str() {
            "/app.js" if req.header("if-none-match") == Some("\"js1\"") => {
                Reply::new(304, &[("cache-control", "max-age=1"), ("etag", "\"js1\"")], "")
            }
            "/app.js" => Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=1"), ("etag", "\"js1\"")], js),
            "/tiny.json" => Reply::new(200, &[("content-type", "application/json"), ("cache-control", "max-age=60")], "{\"a\":1}"),
            "/photo.png" => Reply::new(200, &[("content-type", "image/png"), ("cache-control", "max-age=60")], js),
            "/pre.css" => Reply::new(
                200,
                &[("content-type", "text/css"), ("content-encoding", "gzip"), ("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                format!("pre-compressed #{n}"),
            ),
            _ => Reply::new(200, &[("content-type", "text/html"), ("cache-control", "max-age=60"), ("etag", "\"h1\"")], js),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_variant_per_coding_stored_encoded_and_never_compressed_twice() {
    let o = origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let plain = script().into_bytes();
    let mut etags = Vec::new();
    for (ae, coding) in [("gzip, deflate, br, zstd", "zstd"), ("gzip, deflate, br", "br"), ("gzip", "gzip")] {
        let r = get_with(p.public, "/page", &[("Accept-Encoding", ae)]).await;
        assert_eq!((r.status, r.header("x-cache"), r.header("content-encoding")), (200, "MISS", coding), "{ae}");
        assert_eq!(r.header("vary"), "Accept-Encoding");
        assert!(r.opt_header("x-portier-compressible").is_none(), "the marker stays inside");
        assert_eq!(decode(coding, &r.body), plain, "{coding} decodes to the origin's body");
        assert!(r.body.len() * 4 < plain.len(), "{coding}: {} -> {} bytes", plain.len(), r.body.len());
        assert_eq!(r.header("etag"), format!("\"h1-{coding}\""), "its own validator");
        etags.push((coding, r.header("etag").to_string()));
    }
    let r = get(p.public, "/page").await;
    assert_eq!((r.header("x-cache"), r.opt_header("content-encoding"), r.header("etag")), ("MISS", None, "\"h1\""));
    assert_eq!(r.body, plain);
    // Other spellings land on the same four variants: hits, never compressed again.
    for (ae, coding) in [("zstd", "zstd"), ("br;q=1.0, zstd;q=0.9", "br"), ("deflate, gzip;q=0.8", "gzip"), ("*", "zstd"), ("identity", "")]
    {
        let r = get_with(p.public, "/page", &[("Accept-Encoding", ae)]).await;
        assert_eq!(r.header("x-cache"), "HIT", "{ae}");
        assert_eq!(r.opt_header("content-encoding").unwrap_or(""), coding, "{ae}");
    }
    assert_eq!(o.count("/page"), 4, "one origin request per coding");
    // Each variant's ETag answers 304 for its own coding.
    for (coding, etag) in &etags {
        let r = get_with(p.public, "/page", &[("Accept-Encoding", coding), ("If-None-Match", etag)]).await;
        assert_eq!((r.status, r.header("x-cache")), (304, "HIT"), "{coding}");
    }
    let stats = get(p.admin, "/cache/stats").await.json();
    assert_eq!(stats["entries"], 4);
    let r = request(p.public, "PURGE", "/page", &[], b"").await.unwrap();
    assert_eq!(r.json()["purged"], 4, "a PURGE drops every coding's variant");
    let m = get(p.admin, "/metrics").await.text();
    let inb = metric_value(&m, "compression_bytes_total{encoding=\"zstd\",route=\"/*\",stage=\"in\"}").unwrap();
    let outb = metric_value(&m, "compression_bytes_total{encoding=\"zstd\",route=\"/*\",stage=\"out\"}").unwrap();
    assert_eq!(inb as usize, plain.len());
    assert!(outb > 0.0 && outb * 4.0 < inb, "{outb} of {inb}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_never_compressed_and_revalidation_with_the_origins_etag() {
    let o = origin().await;
    let p = Portier::start(&config_for(o.addr, "", ""));
    let gz = [("Accept-Encoding", "gzip")];
    for path in ["/tiny.json", "/photo.png"] {
        let r = get_with(p.public, path, &gz).await;
        assert_eq!(r.opt_header("content-encoding"), None, "{path}");
        assert_eq!(r.opt_header("vary"), None, "{path}: nothing varies");
    }
    let r = get_with(p.public, "/pre.css", &gz).await;
    assert_eq!((r.header("content-encoding"), r.text()), ("gzip", "pre-compressed #1".to_string()), "passed through as the origin sent it");

    let r = get_with(p.public, "/app.js", &gz).await;
    assert_eq!((r.header("x-cache"), r.header("etag")), ("MISS", "\"js1-gzip\""));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get_with(p.public, "/app.js", &gz).await;
    assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("REVALIDATED", "gzip"), "{r:?}");
    assert_eq!(decode("gzip", &r.body), script().into_bytes());
    assert_eq!(o.last("/app.js").unwrap().header("if-none-match"), Some("\"js1\""), "the origin is asked with its own ETag");

    let off = Portier::start(&config_for(o.addr, "compress = []", ""));
    let r = get_with(off.public, "/page", &gz).await;
    assert_eq!(r.opt_header("content-encoding"), None, "compress = [] turns it off");
}

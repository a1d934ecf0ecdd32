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

/// A bundle as a build tool writes one: version `v` differs from the previous one in a few
/// functions, the rest is the same code.
fn bundle(v: u32) -> String {
    (0..600)
        .map(|i| {
            if i % 97 == 0 {
                format!("function f{i}(a) {{ return a + {v}; }} // v{v}\n")
            } else {
                format!("function f{i}(a, b) {{ return a * {i} + b; }}\n")
            }
        })
        .collect()
}

const DICT_AE: &str = "gzip, deflate, br, zstd, dcb, dcz";

/// `:<base64 of SHA-256>:`, as Chromium sends `Available-Dictionary`.
fn offer(body: &str) -> (String, [u8; 32]) {
    use base64::Engine as _;
    let h = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let hash: [u8; 32] = h.as_ref().try_into().unwrap();
    (format!(":{}:", base64::engine::general_purpose::STANDARD.encode(hash)), hash)
}

/// RFC 9842 §4: the 8-byte `dcz` magic, the dictionary's hash, then a zstd frame made with
/// the dictionary as its prefix.
fn decode_dcz(body: &[u8], hash: &[u8; 32], dictionary: &str) -> String {
    assert_eq!(body[..8], [0x5e, 0x2a, 0x4d, 0x18, 0x20, 0x00, 0x00, 0x00], "dcz magic");
    assert_eq!(&body[8..40], hash, "the dictionary's hash");
    let mut out = Vec::new();
    zstd::stream::read::Decoder::with_dictionary(&body[40..], dictionary.as_bytes()).unwrap().read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Load v1 (it becomes the dictionary), deploy v2, ask for v2 holding v1: a `dcz` delta,
/// stored once (a HIT after), its own validator, fallbacks for clients without the
/// dictionary, and a PURGE that reaches it; over HTTP/1.1, TLS and HTTP/2.
#[tokio::test(flavor = "multi_thread")]
async fn dictionary_deltas_after_a_deploy_over_every_protocol() {
    use crate::common::client::{Front, Proto};
    let o = Scripted::start(|req, _| {
        let v = if req.target.ends_with("v1.js") { 1 } else { 2 };
        Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=60"), ("etag", &format!("\"b{v}\""))], bundle(v))
    })
    .await;
    let f = Front::start(&config_for(o.addr, "dictionary = \"/assets/*.js\"", ""));
    let (v1, v2) = (bundle(1), bundle(2));
    let (offer_v1, hash) = offer(&v1);
    for proto in Proto::ALL {
        let (p1, p2) = (format!("/assets/{}/app.v1.js", proto.name()), format!("/assets/{}/app.v2.js", proto.name()));
        let r = f.get(proto, &p1, &[("accept-encoding", DICT_AE)]).await;
        assert_eq!((r.status, r.header("x-cache"), r.header("content-encoding")), (200, "MISS", "zstd"), "{proto:?}");
        assert_eq!(r.header("use-as-dictionary"), "match=\"/assets/*.js\"", "{proto:?}");
        assert_eq!(decode("zstd", &r.body), v1.as_bytes());
        let zstd_size = get_zstd_size(&f, proto, &p2).await;

        let r = f.get(proto, &p2, &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1)]).await;
        assert_eq!((r.status, r.header("x-cache"), r.header("content-encoding")), (200, "MISS", "dcz"), "{proto:?}: {r:?}");
        assert_eq!(r.header("vary"), "Accept-Encoding, Available-Dictionary", "{proto:?}");
        assert_eq!(r.header("use-as-dictionary"), "match=\"/assets/*.js\"", "v2 is the next deploy's dictionary");
        assert_eq!(decode_dcz(&r.body, &hash, &v1), v2, "{proto:?}");
        let id: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.header("etag"), format!("\"b2-dcz-{id}\""));
        assert!(r.body.len() * 5 < zstd_size, "{proto:?}: dcz {} bytes vs zstd {zstd_size} of {}", r.body.len(), v2.len());
        let delta = r.body.clone();
        let etag = r.header("etag").to_string();

        let r = f.get(proto, &p2, &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1)]).await;
        assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("HIT", "dcz"), "{proto:?}");
        assert_eq!(r.body, delta);
        assert_eq!(o.count(&p2), 2, "{proto:?}: one origin request for zstd, one for the delta");
        let r = f.get(proto, &p2, &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1), ("if-none-match", &etag)]).await;
        assert_eq!((r.status, r.header("x-cache")), (304, "HIT"), "{proto:?}: the delta's own validator");

        // A dictionary Portier never kept, a malformed offer, or no dcz: the ordinary variant.
        let (unknown, _) = offer("something else");
        for extra in [("available-dictionary", unknown.as_str()), ("available-dictionary", ":notbase64!:"), ("x-none", "")] {
            let r = f.get(proto, &p2, &[("accept-encoding", DICT_AE), extra]).await;
            assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("HIT", "zstd"), "{proto:?} {extra:?}");
        }
        let r = f.get(proto, &p2, &[("accept-encoding", "gzip, br, zstd"), ("available-dictionary", &offer_v1)]).await;
        assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("HIT", "zstd"), "{proto:?}: dcz not accepted");
        assert_eq!(o.count(&p2), 2);

        let r = f.send(proto, "PURGE", &p2, &[], b"").await.unwrap();
        assert_eq!((r.status, r.json()["purged"].as_u64()), (200, Some(2)), "{proto:?}: the delta and the zstd variant");
        let r = f.get(proto, &p2, &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1)]).await;
        assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("MISS", "dcz"), "{proto:?}");
        assert_eq!(o.count(&p2), 3);
    }
    let metrics = get(f.portier.admin, "/metrics").await.text();
    assert!(metrics.contains("compression_dictionaries 2\n"), "v1 and v2 are kept (same bodies on every protocol): {metrics}");
    assert!(metrics.contains("compression_bytes_total{encoding=\"dcz\",route=\"/*\",stage=\"in\"}"), "{metrics}");
}

async fn get_zstd_size(f: &crate::common::client::Front, proto: crate::common::client::Proto, path: &str) -> usize {
    let r = f.get(proto, path, &[("accept-encoding", "zstd")]).await;
    assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("MISS", "zstd"));
    r.body.len()
}

/// The same against nginx, which sends its own ETag and `Last-Modified` and refuses what a
/// browser would not send.
#[tokio::test(flavor = "multi_thread")]
async fn dictionary_deltas_from_nginx() {
    use crate::common::client::{Front, Proto};
    let nginx = crate::common::nginx::Nginx::start();
    let (v1, v2) = (bundle(1), bundle(2));
    nginx.put("/assets/app.v1.js", &v1);
    nginx.put("/assets/app.v2.js", &v2);
    let f = Front::start(&config_for(nginx.addr, "dictionary = \"/assets/*.js\"", ""));
    let r = f.get(Proto::H2Tls, "/assets/app.v1.js", &[("accept-encoding", DICT_AE)]).await;
    assert_eq!((r.status, r.header("content-encoding"), r.header("use-as-dictionary")), (200, "zstd", "match=\"/assets/*.js\""), "{r:?}");
    let (offer_v1, hash) = offer(&v1);
    let r = f.get(Proto::H2Tls, "/assets/app.v2.js", &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1)]).await;
    assert_eq!((r.status, r.header("x-cache"), r.header("content-encoding")), (200, "MISS", "dcz"), "{r:?}");
    assert_eq!(decode_dcz(&r.body, &hash, &v1), v2);
    let etag = r.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.contains("-dcz-"), "nginx's strong ETag with the delta's suffix: {etag}");
    let r = f.get(Proto::H2Tls, "/assets/app.v2.js", &[("accept-encoding", DICT_AE), ("available-dictionary", &offer_v1)]).await;
    assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("HIT", "dcz"));
    let asked = nginx.log().into_iter().filter(|(_, uri, _)| uri == "/assets/app.v2.js").count();
    assert_eq!(asked, 1, "{:?}", nginx.log());
}

/// Headless Chromium: the first load stores v1 as a dictionary; after the deploy the reload
/// asks for v2 with `Available-Dictionary` and gets a `dcz` delta, which runs.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_gets_the_next_bundle_as_a_delta() {
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let version = Arc::new(AtomicU32::new(1));
    let deployed = version.clone();
    let script = |v: u32| format!("{}window.bundleResult = {v};\n", bundle(v));
    let o = Scripted::start(move |req, _| {
        let v = deployed.load(Ordering::SeqCst);
        match req.target.as_str() {
            "/" => Reply::new(
                200,
                &[("content-type", "text/html"), ("cache-control", "no-cache")],
                format!("<!doctype html><title>app</title><script src=\"/assets/app.v{v}.js\"></script>"),
            ),
            t if t.ends_with("v1.js") => {
                Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=3600")], script(1))
            }
            _ => Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=3600")], script(2)),
        }
    })
    .await;
    let p = Portier::start(&config_for(o.addr, "dictionary = \"/assets/*.js\"", ""));
    let url = format!("http://localhost:{}/", p.public.port());
    let node = root().join("proxy/tests/browser/dictionary.mjs");
    let report = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("node")
            .arg(node)
            .arg(url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node runs");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(first, "deploy", "the first load finished");
        version.store(2, Ordering::SeqCst);
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        let last = out.next().and_then(Result::ok).unwrap_or_default();
        assert!(child.wait().unwrap().success(), "{last}");
        serde_json::from_str::<serde_json::Value>(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
    })
    .await
    .unwrap();
    let loads = report["loads"].as_array().unwrap();
    let (first, second) = (&loads[0]["scripts"][0], &loads[1]["scripts"][0]);
    assert_eq!(
        (first["url"].as_str(), first["useAsDictionary"].as_str()),
        (Some("/assets/app.v1.js"), Some("match=\"/assets/*.js\"")),
        "{report}"
    );
    assert_eq!(loads[0]["result"], 1, "{report}");
    let (offer_v1, _) = offer(&script(1));
    assert_eq!(second["url"], "/assets/app.v2.js", "{report}");
    assert_eq!(second["availableDictionary"], offer_v1.as_str(), "Chromium offers v1 by its hash: {report}");
    assert_eq!(second["contentEncoding"], "dcz", "{report}");
    assert_eq!(loads[1]["result"], 2, "the delta decoded and ran: {report}");
    let t = &loads[1]["timing"][0];
    let (transfer, decoded) = (t["encodedBodySize"].as_u64().unwrap(), t["decodedBodySize"].as_u64().unwrap());
    assert_eq!(decoded, script(2).len() as u64, "{report}");
    assert!(transfer * 20 < decoded, "a delta, not the bundle: {transfer} of {decoded} bytes: {report}");
    eprintln!(
        "chromium {}: v1 {} B as {}; v2 {decoded} B as dcz in {transfer} B",
        report["browser"], loads[0]["timing"][0]["encodedBodySize"], first["contentEncoding"]
    );
}

/// An origin's 304 names its own `Vary` (Express sends `Accept-Encoding`): the refreshed delta
/// keeps Portier's `Available-Dictionary` in it, or a cache downstream could hand the delta to
/// a client without the dictionary.
#[tokio::test(flavor = "multi_thread")]
async fn a_revalidated_delta_keeps_its_vary() {
    use crate::common::client::{Front, Proto};
    let o = Scripted::start(|req, _| {
        let v = if req.target.ends_with("v1.js") { 1 } else { 2 };
        let etag = format!("\"r{v}\"");
        if req.header("if-none-match") == Some(etag.as_str()) {
            return Reply::new(304, &[("cache-control", "max-age=1"), ("etag", &etag), ("vary", "Accept-Encoding")], "");
        }
        Reply::new(200, &[("content-type", "text/javascript"), ("cache-control", "max-age=1"), ("etag", &etag)], bundle(v))
    })
    .await;
    let f = Front::start(&config_for(o.addr, "dictionary = \"/assets/*.js\"", ""));
    let (offer_v1, hash) = offer(&bundle(1));
    for proto in Proto::ALL {
        let (p1, p2) = (format!("/assets/{}/r.v1.js", proto.name()), format!("/assets/{}/r.v2.js", proto.name()));
        assert_eq!(f.get(proto, &p1, &[("accept-encoding", DICT_AE)]).await.status, 200);
        let ask = [("accept-encoding", DICT_AE), ("available-dictionary", offer_v1.as_str())];
        let r = f.get(proto, &p2, &ask).await;
        assert_eq!((r.header("x-cache"), r.header("content-encoding")), ("MISS", "dcz"), "{proto:?}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for cache in ["REVALIDATED", "HIT"] {
            let r = f.get(proto, &p2, &ask).await;
            assert_eq!((r.header("x-cache"), r.header("content-encoding")), (cache, "dcz"), "{proto:?}");
            assert_eq!(r.header("vary"), "Accept-Encoding, Available-Dictionary", "{proto:?} {cache}");
            assert_eq!(decode_dcz(&r.body, &hash, &bundle(1)), bundle(2));
        }
    }
}

/// A real library (acorn, 247 KB, from the browser tests' npm install).
pub(crate) fn library() -> String {
    let path = root().join("proxy/tests/browser/node_modules/acorn/dist/acorn.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (make test runs npm ci in proxy/tests/browser)", path.display()))
}

async fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    let text = get(admin, "/metrics").await.text();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// The first client gets the quick level; once the stored copy is hit it is compressed again
/// at the strongest level in the background and replaces it (its own ETag, a hit, the same
/// body decoded); a purge before that leaves nothing to bring back; an If-Range date never
/// resumes across the two copies.
#[tokio::test(flavor = "multi_thread")]
async fn stored_text_is_recompressed_at_the_strongest_level_behind_the_first_response() {
    use crate::common::client::{Front, Proto};
    let lib = library();
    let body = lib.clone();
    let o = Scripted::start(move |_, _| {
        Reply::new(
            200,
            &[
                ("content-type", "text/javascript"),
                ("cache-control", "max-age=600"),
                ("etag", "\"a1\""),
                ("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
            ],
            body.clone(),
        )
    })
    .await;
    let f = Front::start(&config_for(o.addr, "", ""));
    for (proto, coding) in [(Proto::H1, "zstd"), (Proto::H2Tls, "zstd"), (Proto::H1Tls, "br")] {
        let path = format!("/lib/{}.js", proto.name());
        let ae = [("accept-encoding", coding)];
        let first = f.get(proto, &path, &ae).await;
        assert_eq!(
            (first.header("x-cache"), first.header("content-encoding"), first.header("etag")),
            ("MISS", coding, format!("\"a1-{coding}\"").as_str())
        );
        let range = [("accept-encoding", coding), ("range", "bytes=0-999")];
        assert_eq!(f.get(proto, &path, &range).await.status, 206);
        let start = std::time::Instant::now();
        let r = loop {
            let r = f.get(proto, &path, &ae).await;
            assert_eq!(r.header("x-cache"), "HIT", "{proto:?}");
            if r.header("etag") != format!("\"a1-{coding}\"") || start.elapsed() > Duration::from_secs(20) {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(r.header("etag"), format!("\"a1-{coding}-max\""), "{proto:?}: replaced within 20 s");
        assert_eq!(decode(coding, &r.body), lib.as_bytes(), "{proto:?}");
        assert!(r.body.len() * 100 < first.body.len() * 92, "{proto:?} {coding}: {} -> {} bytes", first.body.len(), r.body.len());
        assert_eq!(r.header("content-length"), r.body.len().to_string());
        eprintln!("{coding}: first copy {} B, stored after re-compression {} B (of {})", first.body.len(), r.body.len(), lib.len());
        let r = f.get(proto, &path, &[("accept-encoding", coding), ("if-none-match", &format!("\"a1-{coding}-max\""))]).await;
        assert_eq!((r.status, r.header("x-cache")), (304, "HIT"));
        // Resuming the first copy's download by its date: the whole new copy, not a mix.
        let resume = [("accept-encoding", coding), ("range", "bytes=1000-"), ("if-range", "Wed, 21 Oct 2026 07:28:00 GMT")];
        let r = f.get(proto, &path, &resume).await;
        assert_eq!((r.status, r.body.len()), (200, r.header("content-length").parse().unwrap()), "{proto:?}");
        let r = f
            .get(proto, &path, &[("accept-encoding", coding), ("range", "bytes=1000-"), ("if-range", &format!("\"a1-{coding}-max\""))])
            .await;
        assert_eq!(r.status, 206, "its own entity tag resumes it");
        assert_eq!(o.count(&path), 1, "{proto:?}: one origin request");
    }
    assert_eq!(metric(f.portier.admin, "compression_recompressed_total{encoding=\"zstd\",outcome=\"replaced\"}").await, 2.0);
    assert!(metric(f.portier.admin, "compression_recompress_saved_bytes_total{encoding=\"br\"}").await > 1000.0);

    // br 11 takes a few hundred milliseconds here: the PURGE lands first.
    let br = [("accept-encoding", "br")];
    assert_eq!(f.get(Proto::H1, "/race.js", &br).await.header("x-cache"), "MISS");
    assert_eq!(f.get(Proto::H1, "/race.js", &br).await.header("x-cache"), "HIT");
    assert_eq!(f.send(Proto::H1, "PURGE", "/race.js", &[], b"").await.unwrap().status, 200);
    let start = std::time::Instant::now();
    while metric(f.portier.admin, "compression_recompressed_total{encoding=\"br\",outcome=\"changed\"}").await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the re-compression ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = f.get(Proto::H1, "/race.js", &br).await;
    assert_eq!((r.header("x-cache"), r.header("etag")), ("MISS", "\"a1-br\""), "the purged copy did not come back");
    // Requested once and never again (a cache-busting query): nothing to re-compress.
    for i in 0..5 {
        assert_eq!(f.get(Proto::H1, &format!("/bust.js?v={i}"), &br).await.header("x-cache"), "MISS");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for outcome in ["replaced", "changed"] {
        let series = format!("compression_recompressed_total{{encoding=\"br\",outcome=\"{outcome}\"}}");
        assert_eq!(metric(f.portier.admin, &series).await, 1.0, "{outcome}: nothing queued for URLs never hit");
    }
}

//! HTTPS over real sockets with real curl: HTTP/2 by ALPN, certificates chosen by SNI,
//! reloaded on SIGHUP, the real scheme in X-Forwarded-Proto and the cache key, HSTS, the
//! redirect from plain HTTP, `portier check` on a key that does not match, and the same
//! certificates (SNI, SIGHUP) over HTTP/3.

use crate::common::scripted::{Reply, Scripted};
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

fn make(dir: &Path, name: &str, hosts: &[&str]) -> Pair {
    let c = rcgen::generate_simple_self_signed(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    let pair = Pair { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
    std::fs::write(&pair.cert, c.cert.pem()).unwrap();
    std::fs::write(&pair.key, c.signing_key.serialize_pem()).unwrap();
    pair
}

/// curl over HTTPS, trusting `ca`, with `host` resolved to the TLS listener: (status line, headers and body).
fn curl(tls: std::net::SocketAddr, host: &str, ca: &Path, path: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args(["--http2", "-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", tls.port()))
        .arg(format!("https://{host}:{}{path}", tls.port()))
        .output()
        .expect("curl runs (make test installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn config(origin: std::net::SocketAddr, a: &Pair, b: &Pair) -> String {
    format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\nredirect_http = true\nhsts = \"max-age=31536000\"\ncertificates = [\n  {{ cert = \"{}\", key = \"{}\" }},\n  {{ cert = \"{}\", key = \"{}\" }},\n]\n\
         [upstreams.o]\naddresses = [\"{origin}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n",
        a.cert.display(),
        a.key.display(),
        b.cert.display(),
        b.key.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_http2_sni_reload_hsts_and_redirect() {
    let o = Scripted::start(|req, n| {
        Reply::new(
            200,
            &[("cache-control", "max-age=60")],
            format!("{} proto={} #{n}", req.target, req.header("x-forwarded-proto").unwrap_or("-")),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = make(dir.path(), "a", &["localhost"]);
    let b = make(dir.path(), "b", &["other.test"]);
    let p = Portier::start(&config(o.addr, &a, &b));
    let tls = p.tls.expect("the listening event names the TLS address");

    let (ok, out) = tokio::task::spawn_blocking(move || curl(tls, "localhost", &a.cert, "/x")).await.unwrap();
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/2 200"), "HTTP/2 by ALPN: {out}");
    assert!(out.contains("x-cache: MISS") && out.contains("strict-transport-security: max-age=31536000"), "{out}");
    assert!(out.ends_with("/x proto=https #1"), "the origin is told the real scheme: {out}");
    let a = Pair { cert: dir.path().join("a.pem"), key: dir.path().join("a.key") };
    let a_cert = a.cert.clone();
    let (_, out) = tokio::task::spawn_blocking(move || curl(tls, "localhost", &a_cert, "/x")).await.unwrap();
    assert!(out.contains("x-cache: HIT"), "{out}");
    // The other certificate is chosen by SNI (curl trusts only b for other.test).
    let b_cert = b.cert.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || curl(tls, "other.test", &b_cert, "/y")).await.unwrap();
    assert!(ok && out.starts_with("HTTP/2 200"), "{out}");

    // Plain HTTP: the key is another (http) entry, no HSTS, and redirect_http sends it over.
    let r = get_with(p.public, "/x?q=1", &[("Host", "localhost")]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), format!("https://localhost:{}/x?q=1", tls.port()));
    assert!(r.opt_header("strict-transport-security").is_none());

    // SIGHUP reloads the files: a new certificate for localhost is served at once.
    let fresh = make(dir.path(), "a", &["localhost"]);
    let old = make(dir.path(), "old", &["localhost"]);
    p.signal(libc::SIGHUP);
    let served_new = eventually(Duration::from_secs(5), async || {
        let ca = fresh.cert.clone();
        tokio::task::spawn_blocking(move || curl(tls, "localhost", &ca, "/x").0).await.unwrap()
    })
    .await;
    assert!(served_new, "the reloaded certificate is served");
    let ca = old.cert.clone();
    assert!(!tokio::task::spawn_blocking(move || curl(tls, "localhost", &ca, "/x").0).await.unwrap());
    assert!(p.stdout_lines().iter().any(|l| l.contains("tls_certificates_reloaded")));
    assert_eq!(o.count("/x"), 1, "HTTPS hits came from the cache");
}

#[test]
fn check_names_a_certificate_whose_key_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let a = make(dir.path(), "a", &["localhost"]);
    let b = make(dir.path(), "b", &["other.test"]);
    let bad = Pair { cert: a.cert.clone(), key: b.key.clone() };
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, config("127.0.0.1:9".parse().unwrap(), &bad, &b)).unwrap();
    let out = Command::new(bin()).arg("check").arg("--config").arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("tls.certificates[0]: ") && text.contains("b.key: the private key does not go with the certificate"), "{text}");
}

/// TLS to origins: a second Portier reaches an HTTPS origin (here, the first Portier's TLS
/// listener) with SNI and certificate verification against a configured CA; a CA that did
/// not sign the origin's certificate gets a 502, and `verify = false` accepts it. Health
/// checks speak TLS too.
#[tokio::test(flavor = "multi_thread")]
async fn origins_over_tls_are_verified() {
    let o = Scripted::start(|req, n| Reply::new(200, &[("cache-control", "no-store")], format!("{} #{n}", req.target))).await;
    let dir = tempfile::tempdir().unwrap();
    let a = make(dir.path(), "a", &["origin.test"]);
    let stranger = make(dir.path(), "s", &["origin.test"]);
    let front_cfg = |ca: &Path, verify: bool| {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
             [upstreams.o]\naddresses = [\"{o}\"]\n[[routes]]\npath = \"/*\"\npool = \"o\"\n",
            a.cert.display(),
            a.key.display(),
            o = o.addr
        ) + &format!("# verify {verify} {}\n", ca.display())
    };
    let origin_portier = Portier::start(&front_cfg(&a.cert, true));
    let tls_origin = origin_portier.tls.unwrap();
    let edge = |ca: &Path, verify: bool| {
        Portier::start(&format!(
            "[upstreams.o]\naddresses = [\"{tls_origin}\"]\ntls = {{ sni = \"origin.test\", ca = \"{}\", verify = {verify} }}\n\
             health_check = {{ path = \"/health\", interval = \"200ms\", timeout = \"1s\" }}\n\
             [[routes]]\npath = \"/*\"\npool = \"o\"\n",
            ca.display()
        ))
    };
    let good = edge(&a.cert, true);
    let r = get(good.public, "/x").await;
    assert_eq!((r.status, r.text()), (200, "/x #1".to_string()), "{r:?}");
    let health = async |p: &Portier| {
        metric_value(&get(p.admin, "/metrics").await.text(), &format!("upstream_healthy{{address=\"{tls_origin}\",pool=\"o\"}}"))
    };
    let wrong = edge(&stranger.cert, true);
    assert_eq!(get(wrong.public, "/y").await.status, 502, "a certificate the CA did not sign is refused");
    // Health checks run over TLS with the same trust: the untrusted origin is marked down,
    // the trusted one stays up (a plain-HTTP probe of a TLS port would fail both).
    assert!(eventually(Duration::from_secs(3), async || health(&wrong).await == Some(0.0)).await, "checks run and verify");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(health(&good).await, Some(1.0), "the TLS health check passes");
    let lax = edge(&stranger.cert, false);
    assert_eq!(get(lax.public, "/z").await.status, 200, "verify = false accepts it");
    assert_eq!(o.count("/y"), 0);
}

/// An HTTP/3 GET trusting only `ca`, for `host` (SNI and `:authority`): the status, or why not.
async fn h3_get(tls: std::net::SocketAddr, host: &str, ca: &Path, path: &str) -> Result<u16, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let mut c = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(c).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let run = async {
        let conn = endpoint.connect(tls, host).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn)).await.map_err(|e| e.to_string())?;
        let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let req = http::Request::get(format!("https://{host}:{}{path}", tls.port())).body(()).map_err(|e| e.to_string())?;
        let mut s = send.send_request(req).await.map_err(|e| e.to_string())?;
        s.finish().await.map_err(|e| e.to_string())?;
        let status = s.recv_response().await.map_err(|e| e.to_string())?.status().as_u16();
        drive.abort();
        Ok(status)
    };
    let out = tokio::time::timeout(Duration::from_secs(10), run).await.map_err(|e| e.to_string())?;
    endpoint.close(0u32.into(), b"done");
    out
}

/// HTTP/3 serves the TLS listener's certificates: chosen by SNI, and the reloaded ones after
/// SIGHUP, on UDP as on TCP.
#[tokio::test(flavor = "multi_thread")]
async fn http3_uses_the_same_certificates_sni_and_reload() {
    let o = Scripted::start(|req, n| Reply::new(200, &[("cache-control", "max-age=60")], format!("{} #{n}", req.target))).await;
    let dir = tempfile::tempdir().unwrap();
    let a = make(dir.path(), "a", &["localhost"]);
    let b = make(dir.path(), "b", &["other.test"]);
    let cfg = config(o.addr, &a, &b).replacen("[tls]\n", "[tls]\nhttp3 = true\n", 1);
    let p = Portier::start(&cfg);
    let tls = p.tls.unwrap();
    assert_eq!(h3_get(tls, "localhost", &a.cert, "/x").await, Ok(200));
    assert_eq!(h3_get(tls, "other.test", &b.cert, "/y").await, Ok(200), "the other certificate, by SNI");
    assert!(h3_get(tls, "other.test", &a.cert, "/y").await.is_err(), "a's certificate does not cover other.test");
    let before = dir.path().join("before.pem");
    std::fs::copy(&a.cert, &before).unwrap();
    let fresh = make(dir.path(), "a", &["localhost"]);
    p.signal(libc::SIGHUP);
    let served_new = eventually(Duration::from_secs(5), async || h3_get(tls, "localhost", &fresh.cert, "/x").await == Ok(200)).await;
    assert!(served_new, "the reloaded certificate is served over QUIC");
    assert!(h3_get(tls, "localhost", &before, "/x").await.is_err(), "the certificate from before the reload is no longer served");
    assert_eq!(o.count("/x"), 1, "HTTP/3 hits came from the cache");
}

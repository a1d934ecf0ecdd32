//! One client for every protocol a browser uses: plain HTTP/1.1, HTTP/1.1 over TLS, HTTP/2
//! over TLS (ALPN) and HTTP/3 over QUIC (quinn + h3, on the TLS port's UDP twin), so a test
//! written once runs on each ([`Proto::ALL`]). HTTP/2 and HTTP/3 requests are sent as browsers
//! send them: `:authority` and no `Host` field, cookies split one per field.

use super::{request, Portier, Resp};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H1Tls,
    H2Tls,
    H3,
}

impl Proto {
    pub const ALL: [Proto; 4] = [Proto::H1, Proto::H1Tls, Proto::H2Tls, Proto::H3];

    pub fn name(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H1Tls => "h1-tls",
            Proto::H2Tls => "h2-tls",
            Proto::H3 => "h3",
        }
    }

    /// The `network.protocol.version` Portier logs for it.
    pub fn version(self) -> &'static str {
        match self {
            Proto::H1 | Proto::H1Tls => "1.1",
            Proto::H2Tls => "2",
            Proto::H3 => "3",
        }
    }

    pub fn scheme(self) -> &'static str {
        if self == Proto::H1 {
            "http"
        } else {
            "https"
        }
    }
}

/// A self-signed certificate for `a.test` (and `localhost`), written where `[tls]` reads it.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
    /// Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it (QUIC has no "accept any certificate").
    pub spki_sha256: String,
}

impl TestCert {
    pub fn new(dir: &Path) -> TestCert {
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string(), "localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("a.test.pem"), dir.join("a.test.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        use base64::Engine as _;
        let (_, parsed) = x509_parser::parse_x509_certificate(c.cert.der()).unwrap();
        let spki = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
        let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
        TestCert { cert, key, der: c.cert.der().clone(), spki_sha256 }
    }

    /// The `[tls]` section serving this certificate on a port-0 listener.
    pub fn tls_section(&self) -> String {
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            self.cert.display(),
            self.key.display()
        )
    }

    pub fn client_config(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(c)
    }

    /// A QUIC client endpoint trusting this certificate, offering ALPN `h3`.
    pub fn quic_client(&self) -> quinn::Endpoint {
        self.quic_client_with(quinn::TransportConfig::default())
    }

    /// [`Self::quic_client`] with its own transport settings (keep-alive PINGs, say).
    pub fn quic_client_with(&self, transport: quinn::TransportConfig) -> quinn::Endpoint {
        let tls = (*self.client_config(b"h3")).clone();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("TLS 1.3 with ring");
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("a UDP socket on loopback");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        endpoint.set_default_client_config(config);
        endpoint
    }

    /// An HTTP/3 connection to `addr` for `a.test`: the QUIC connection, the request sender,
    /// and the task driving the connection.
    pub async fn h3_connect(&self, endpoint: &quinn::Endpoint, addr: SocketAddr) -> std::io::Result<H3Conn> {
        let conn = endpoint.connect(addr, "a.test").map_err(io)?.await.map_err(io)?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await.map_err(io)?;
        let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await.to_string() });
        Ok(H3Conn { conn, send, drive })
    }

    /// One HTTP/3 request on a new QUIC connection to `addr` for `a.test`.
    pub async fn h3(&self, addr: SocketAddr, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Resp> {
        let endpoint = self.quic_client();
        let run = async {
            let mut c = self.h3_connect(&endpoint, addr).await?;
            let r = c.request(method, uri, headers, body).await;
            c.drive.abort();
            r
        };
        let out = tokio::time::timeout(Duration::from_secs(30), run).await.map_err(io)?;
        endpoint.close(0u32.into(), b"done");
        out
    }

    /// A TLS connection to `addr` for `a.test`, offering only `alpn`.
    pub async fn connect(&self, addr: SocketAddr, alpn: &[u8]) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        tokio_rustls::TlsConnector::from(self.client_config(alpn)).connect(name, tcp).await
    }
}

/// Portier with a plain and a TLS listener, reached as `a.test` on both.
pub struct Front {
    pub portier: Portier,
    pub cert: TestCert,
    _dir: tempfile::TempDir,
}

impl Front {
    /// `config` without `[tls]` (added here, HTTP/2 and HTTP/3 on) or `[listen]`.
    pub fn start(config: &str) -> Front {
        Self::start_with_env(config, &[])
    }

    /// [`Self::start`] with these environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::new(dir.path());
        let portier = Portier::start_with_env(&format!("{config}\n{}http3 = true\n", cert.tls_section()), env);
        assert!(portier.tls.is_some(), "the TLS listener is bound");
        Front { portier, cert, _dir: dir }
    }

    /// The listener this protocol arrives on.
    pub fn addr(&self, proto: Proto) -> SocketAddr {
        match proto {
            Proto::H1 => self.portier.public,
            _ => self.portier.tls.expect("tls listener"),
        }
    }

    /// What a browser puts in `Host` / `:authority` on this protocol's listener.
    pub fn authority(&self, proto: Proto) -> String {
        format!("a.test:{}", self.addr(proto).port())
    }

    /// Two visits of `path` by headless Chromium (`browser/visit.mjs`, a fresh browser cache
    /// each) over `proto` (HTTP/2 by ALPN, or HTTP/3 forced for the origin): asserts the
    /// protocol, a MISS then a HIT and `body` each time; returns the script's report.
    pub async fn chromium_visits_twice(&self, proto: Proto, path: &str, body: &str) -> serde_json::Value {
        let root = super::root();
        assert!(
            root.join("proxy/tests/browser/node_modules/playwright-core").exists(),
            "playwright-core missing: run `make test` (it runs `npm ci` in proxy/tests/browser)"
        );
        assert!(Path::new("/usr/bin/chromium").exists(), "chromium missing: run `make test` or `apt-get install -y chromium`");
        let (want, spki) = match proto {
            Proto::H2Tls => ("h2", None),
            Proto::H3 => ("h3", Some(self.cert.spki_sha256.clone())),
            other => panic!("Chromium is driven over HTTP/2 or HTTP/3 here, not {other:?}"),
        };
        let url = format!("https://{}{path}", self.authority(proto));
        let script = root.join("proxy/tests/browser/visit.mjs");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("node").arg(script).arg(url).args(spki).output().expect("node runs")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        let loads = report["loads"].as_array().unwrap();
        assert_eq!(loads.len(), 2, "{report}");
        for (load, cache) in loads.iter().zip(["MISS", "HIT"]) {
            assert_eq!(load["protocol"], want, "{report}");
            assert_eq!(load["status"], 200, "{report}");
            assert_eq!(load["xCache"], cache, "{report}");
            assert_eq!(load["body"], body, "{report}");
        }
        report
    }

    pub async fn get(&self, proto: Proto, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(proto, "GET", path, headers, b"").await.unwrap_or_else(|e| panic!("{} GET {path}: {e}", proto.name()))
    }

    /// One request on a new connection. `headers` may repeat a name (sent as separate fields).
    pub async fn send(&self, proto: Proto, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Resp> {
        let authority = self.authority(proto);
        let addr = self.addr(proto);
        match proto {
            Proto::H1 => {
                let mut h: Vec<(&str, &str)> = vec![("Host", &authority)];
                h.extend_from_slice(headers);
                request(addr, method, path, &h, body).await
            }
            Proto::H3 => self.cert.h3(addr, method, &format!("https://{authority}{path}"), headers, body).await,
            Proto::H1Tls | Proto::H2Tls => {
                let h2 = proto == Proto::H2Tls;
                let tls = self.cert.connect(addr, if h2 { b"h2" } else { b"http/1.1" }).await?;
                let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                assert_eq!(negotiated.as_deref(), Some(if h2 { &b"h2"[..] } else { b"http/1.1" }), "ALPN for {}", proto.name());
                let uri = if h2 { format!("https://{authority}{path}") } else { path.to_string() };
                let mut req = http::Request::builder().method(method).uri(uri);
                if !h2 {
                    req = req.header("host", &authority);
                }
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(std::io::Error::other)?;
                let io = hyper_util::rt::TokioIo::new(tls);
                let resp = if h2 {
                    let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .map_err(std::io::Error::other)?;
                    tokio::spawn(conn);
                    send.send_request(req).await
                } else {
                    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(std::io::Error::other)?;
                    tokio::spawn(conn);
                    send.send_request(req).await
                }
                .map_err(std::io::Error::other)?;
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?
                    .to_bytes()
                    .to_vec();
                Ok(Resp { status, headers, body })
            }
        }
    }
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// An open HTTP/3 connection (see [`TestCert::h3_connect`]).
pub struct H3Conn {
    pub conn: quinn::Connection,
    pub send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Ends with the connection's close reason.
    pub drive: tokio::task::JoinHandle<String>,
}

impl H3Conn {
    /// One request on this connection, its body's length declared (as browsers send a fetch body).
    pub async fn request(&mut self, method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Resp> {
        self.request_with(method, uri, headers, body, true).await
    }

    /// One request; without `declare_length`, the body goes in two DATA frames and only the
    /// stream's end says where it stops (a streamed upload).
    pub async fn request_with(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        declare_length: bool,
    ) -> std::io::Result<Resp> {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() && declare_length {
            req = req.header("content-length", body.len());
        }
        let req = req.body(()).map_err(io)?;
        let mut stream = self.send.send_request(req).await.map_err(io)?;
        if !body.is_empty() {
            let (a, b) = body.split_at(if declare_length { body.len() } else { body.len() / 2 });
            for part in [a, b].into_iter().filter(|p| !p.is_empty()) {
                stream.send_data(Bytes::copy_from_slice(part)).await.map_err(io)?;
            }
        }
        stream.finish().await.map_err(io)?;
        let resp = stream.recv_response().await.map_err(io)?;
        let mut got = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(io)? {
            use bytes::Buf;
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let headers =
            resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        Ok(Resp { status: resp.status().as_u16(), headers, body: got })
    }
}

//! The one small HTTP/1.1 client Portier uses for itself: health checks, the `healthcheck`
//! command, `portier reload`, profile pushes and `portier proof`. One request per connection;
//! hyper's client reads the answer (any framing, chunked included), and a small body (the
//! admin API's JSON answers).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// A request to send: `method target` to `host` (the `Host` field), with extra fields and
/// a body (`Content-Length` is added for any method but GET and HEAD).
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) target: &'a str,
    pub(crate) host: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: &'a [u8],
}

/// The response head: status and fields (names lower-cased), and the body when it is small.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// Empty unless the body was at most [`MAX_BODY`] bytes.
    pub(crate) body: Vec<u8>,
}

/// Largest body read: the admin API's answers, not pages.
const MAX_BODY: usize = 64 * 1024;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn build(r: &Request<'_>) -> io::Result<http::Request<Full<Bytes>>> {
    let mut b = http::Request::builder()
        .method(r.method)
        .uri(r.target)
        .header(http::header::HOST, r.host)
        .header(http::header::USER_AGENT, concat!("portier/", env!("CARGO_PKG_VERSION")))
        .header(http::header::CONNECTION, "close");
    for (k, v) in r.headers {
        b = b.header(*k, *v);
    }
    if !matches!(r.method, "GET" | "HEAD") || !r.body.is_empty() {
        b = b.header(http::header::CONTENT_LENGTH, r.body.len());
    }
    b.body(Full::new(Bytes::copy_from_slice(r.body))).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Sends `req` to `addr` and reads the response head, all within `timeout`.
pub(crate) async fn send(addr: SocketAddr, req: &Request<'_>, timeout: Duration) -> io::Result<Head> {
    send_over(addr, None, req, timeout).await
}

/// [`send`], over TLS when `tls` gives a client configuration and the server name.
pub(crate) async fn send_over(
    addr: SocketAddr,
    tls: Option<(std::sync::Arc<rustls::ClientConfig>, &str)>,
    req: &Request<'_>,
    timeout: Duration,
) -> io::Result<Head> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        match tls {
            Some((config, name)) => {
                let name = rustls::pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                exchange_on(stream, req).await
            }
            None => exchange_on(tcp, req).await,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))?
}

async fn exchange_on(s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static, req: &Request<'_>) -> io::Result<Head> {
    let request = build(req)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(io::Error::other)?;
    // The connection is driven beside the exchange and ends with it (one request each).
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(request).await.map_err(invalid)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).trim().to_string()))
            .collect();
        // A body larger than these callers read, or cut short, is left unread: the status is
        // the answer (a health check reads no page).
        let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => Vec::new(),
        };
        Ok(Head { status, headers, body })
    }
    .await;
    conn.abort();
    result
}

/// [`send`] for callers outside a runtime (the command line, the profile pusher's thread);
/// `authority` is `host:port`, resolved here.
pub(crate) fn send_blocking(authority: &str, req: &Request<'_>, timeout: Duration) -> io::Result<Head> {
    let addr = authority.to_socket_addrs()?.next().ok_or_else(|| io::Error::other(format!("{authority} resolves to nothing")))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(send(addr, req, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_head_of_a_real_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 1024];
            while !raw.ends_with(b"\r\n\r\nhi") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&raw));
                raw.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            assert!(req.starts_with("post /x http/1.1\r\nhost: h\r\n") && req.contains("content-length: 2\r\n"), "{req}");
            s.write_all(b"HTTP/1.1 201 Created\r\nX-A: b\r\n\r\nbody").await.unwrap();
        });
        let head = send(addr, &Request { method: "POST", target: "/x", host: "h", headers: &[], body: b"hi" }, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.headers, vec![("x-a".to_string(), "b".to_string())]);
        assert_eq!(head.body, b"body", "a body read to the close");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_and_a_large_one_left_unread() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n".to_vec(),
                [&b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n"[..], &[b'x'; 70000]].concat(),
            ] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(&answer).await.unwrap();
            }
        });
        let get = Request { method: "GET", target: "/", host: "h", headers: &[], body: b"" };
        let head = send(addr, &get, Duration::from_secs(5)).await.unwrap();
        assert_eq!((head.status, head.body.as_slice()), (200, &b"{\"a\":1}"[..]));
        let head = send(addr, &get, Duration::from_secs(5)).await.unwrap();
        assert_eq!((head.status, head.body.len()), (200, 0), "past MAX_BODY the status alone is the answer");
    }
}

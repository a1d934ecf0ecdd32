//! The one small HTTP/1.1 client Portier uses for itself: health checks, the `healthcheck`
//! command, `portier reload`, profile pushes and `portier proof`. One request per connection
//! (`Connection: close`); the response head is read, and a small body with a
//! `Content-Length` (the admin API's JSON answers).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    /// Empty unless `Content-Length` said at most [`MAX_BODY`] bytes.
    pub(crate) body: Vec<u8>,
}

/// Longest response head read; past it the answer is not one these callers expect.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body read: the admin API's answers, not pages.
const MAX_BODY: usize = 64 * 1024;

fn encode(r: &Request<'_>) -> Vec<u8> {
    let mut head =
        format!("{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portier/{}\r\n", r.method, r.target, r.host, env!("CARGO_PKG_VERSION"));
    for (k, v) in r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !matches!(r.method, "GET" | "HEAD") || !r.body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(r.body);
    out
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") {
        return Err(bad("the answer is not HTTP/1.x"));
    }
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    Ok(Head { status, headers, body: Vec::new() })
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

async fn exchange_on(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, req: &Request<'_>) -> io::Result<Head> {
    s.write_all(&encode(req)).await?;
    let mut raw = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut head = parse_head(&raw[..end])?;
            let declared = head.headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
            if let Some(len) = declared.filter(|n| *n <= MAX_BODY && req.method != "HEAD") {
                let mut body = raw.split_off(end + 4);
                while body.len() < len {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n]);
                }
                body.truncate(len);
                head.body = body;
            }
            return Ok(head);
        }
        if raw.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the end of the response head"));
        }
        raw.extend_from_slice(&buf[..n]);
    }
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

    #[tokio::test]
    async fn reads_the_head_of_a_real_answer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                req.starts_with("POST /x HTTP/1.1\r\nHost: h\r\n") && req.contains("Content-Length: 2\r\n") && req.ends_with("\r\n\r\nhi"),
                "{req}"
            );
            s.write_all(b"HTTP/1.1 201 Created\r\nX-A: b\r\n\r\nbody").await.unwrap();
        });
        let head = send(addr, &Request { method: "POST", target: "/x", host: "h", headers: &[], body: b"hi" }, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.headers, vec![("x-a".to_string(), "b".to_string())]);
    }
}

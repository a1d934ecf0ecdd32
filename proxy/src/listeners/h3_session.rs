//! One HTTP/3 request as a Pingora server session (`ServerSession::Custom`), so it goes through
//! the same `ProxyHttp` hooks as HTTP/1 and HTTP/2: routing, access rules, the cache, limits
//! and telemetry see a request whose version is `HTTP/3`.

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::HeaderMap;
use pingora_core::protocols::http::custom::server::Session;
use pingora_core::protocols::http::custom::CustomMessageWrite;
use pingora_core::protocols::http::{BodyDeadline, HttpTask};
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::Digest;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;
use tokio::time::Instant;

type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request body kept for a retry to another upstream address, as Pingora's own sessions do.
const RETRY_BUFFER: usize = 64 * 1024;

/// Fields that are about one connection and have no meaning in HTTP/3 (RFC 9114 §4.2): an
/// origin's `Connection: keep-alive` or `Transfer-Encoding: chunked` would make the response
/// malformed, and a client refuses it.
const CONNECTION_FIELDS: [http::HeaderName; 5] = [
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
];

/// What every request of one connection shares.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) conn: quinn::Connection,
    pub(super) client: std::net::SocketAddr,
    pub(super) server: Option<std::net::SocketAddr>,
    pub(super) digest: Digest,
    pub(super) body_deadline: Option<BodyDeadline>,
    pub(super) write_stall: Duration,
}

pub(super) struct H3Session {
    req: RequestHeader,
    send: SendHalf,
    /// `None` once the request side is given up: dropping it makes quinn send STOP_SENDING.
    /// (h3-quinn's own `stop_sending` unwraps a stream a cancelled read may have taken.)
    recv: Option<RecvHalf>,
    /// The connection, to learn when the client is gone while the response is prepared.
    conn: quinn::Connection,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    digest: Digest,
    response: Option<ResponseHeader>,
    /// The response's end was sent (or the stream reset): nothing more is written.
    ended: bool,
    body_done: bool,
    body_read: usize,
    body_sent: usize,
    body_deadline: Option<BodyDeadline>,
    body_started: Option<Instant>,
    retry_buffer: Option<(Vec<u8>, bool)>,
    /// The body's first chunk, read before the request goes on (see [`H3Session::look_ahead`]).
    first: Option<Bytes>,
    /// The request's Content-Length, read once (checked to be one number on acceptance).
    declared: Option<u64>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
}

impl H3Session {
    pub(super) fn new(req: RequestHeader, stream: RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>, c: Conn) -> H3Session {
        let (send, recv) = stream.split();
        let declared = req.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        H3Session {
            declared,
            req,
            send,
            recv: Some(recv),
            conn: c.conn,
            client: Some(SocketAddr::Inet(c.client)),
            server: c.server.map(SocketAddr::Inet),
            digest: c.digest,
            response: None,
            ended: false,
            body_done: false,
            body_read: 0,
            body_sent: 0,
            body_deadline: c.body_deadline,
            body_started: None,
            retry_buffer: None,
            first: None,
            read_timeout: None,
            // A client that stops granting flow-control credit would hold a response (and a
            // cache fill others wait on) forever: each write must progress within this.
            write_timeout: Some(c.write_stall),
            drain_timeout: None,
        }
    }

    async fn end(&mut self) -> Result<()> {
        if !self.ended && self.response.is_none() {
            // No head was sent: a bare end of stream would read as a malformed response.
            self.abandon_stream();
            return Ok(());
        }
        if !self.ended {
            // Marked ended only once the end is written: a finish that fails halfway (h3 writes
            // a GREASE frame with it) leaves Drop to reset the stream.
            written(self.write_timeout, "finishing the HTTP/3 response", self.send.finish()).await?;
            self.ended = true;
        }
        Ok(())
    }

    async fn send_header(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        // No interim responses: Pingora forwards a 103 only as a courtesy, and h3 gives no way
        // to send one apart from the final head.
        if resp.status.is_informational() {
            return Ok(());
        }
        if self.response.is_some() {
            return Error::e_explain(ErrorType::InternalError, "a second HTTP/3 response head");
        }
        let mut parts = resp.as_owned_parts();
        for f in &CONNECTION_FIELDS {
            parts.headers.remove(f);
        }
        parts.version = http::Version::HTTP_3;
        // As Pingora's HTTP/1 and HTTP/2 servers do (RFC 9110 §6.6.1): the origin's, else now.
        if !parts.headers.contains_key(http::header::DATE) {
            if let Ok(now) = http::HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())) {
                parts.headers.insert(http::header::DATE, now);
            }
        }
        let head = http::Response::from_parts(parts, ());
        written(self.write_timeout, "writing the HTTP/3 response head", self.send.send_response(head)).await?;
        self.response = Some(resp.clone());
        if end {
            self.end().await?;
        }
        Ok(())
    }

    /// `Content-Length: 0`: nothing to wait for (the stream's end may come later).
    fn declared_empty(&self) -> bool {
        self.declared == Some(0)
    }

    /// A body is announced (a non-zero Content-Length): it gets the body's deadline to start.
    pub(super) fn declares_body(&self) -> bool {
        self.declared.is_some_and(|n| n > 0)
    }

    /// A request whose body (or end) never came: both directions reset, so the client's
    /// stream credit comes back at once (RFC 9114 §4.1.1: H3_REQUEST_INCOMPLETE).
    pub(super) fn refuse_incomplete(&mut self) {
        self.ended = true;
        self.send.stop_stream(h3::error::Code::H3_REQUEST_INCOMPLETE);
        self.recv = None;
    }

    /// A response that cannot be completed is reset, so the client cannot take what it got
    /// for the whole (RFC 9114 §4.1.1: H3_INTERNAL_ERROR).
    fn abandon_stream(&mut self) {
        if !self.ended {
            self.ended = true;
            self.send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
        }
        self.recv = None;
    }

    /// Whether the request has a body at all. HTTP/3 says so only by the stream's end (a GET
    /// usually ends with its HEADERS frame), and Pingora frames the request to the origin from
    /// it: not knowing, it would send a bodiless GET as `Transfer-Encoding: chunked`. The first
    /// chunk read here is kept for the body's reader.
    pub(super) async fn look_ahead(&mut self, within: Duration) -> Result<()> {
        if self.declared_empty() {
            return Ok(());
        }
        let first = tokio::time::timeout(within, self.recv_chunk())
            .await
            .or_err(ErrorType::ReadTimedout, "waiting for the HTTP/3 request body or its end")??;
        match first {
            Some(b) => self.first = Some(b),
            None => self.body_done = true,
        }
        Ok(())
    }

    async fn recv_chunk(&mut self) -> Result<Option<Bytes>> {
        chunk(self.recv.as_mut()).await
    }

    async fn read(&mut self) -> Result<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            if self.declared.is_some_and(|n| first.len() as u64 > n) {
                return Error::e_explain(ErrorType::ReadError, "HTTP/3 request body longer than its Content-Length");
            }
            return Ok(Some(self.account(first)));
        }
        if self.body_done {
            return Ok(None);
        }
        let (deadline, timeout) = (self.body_deadline, self.read_timeout);
        let at = deadline.map(|d| d.at(*self.body_started.get_or_insert_with(Instant::now), self.body_read));
        let recv = chunk(self.recv.as_mut());
        let data = match (at, timeout) {
            (Some(at), _) => {
                tokio::time::timeout_at(at, recv).await.or_err(ErrorType::ReadTimedout, "request body slower than the minimum rate")?
            }
            (None, Some(t)) => tokio::time::timeout(t, recv).await.or_err(ErrorType::ReadTimedout, "reading the HTTP/3 request body")?,
            (None, None) => recv.await,
        };
        let Some(bytes) = data? else {
            self.body_done = true;
            // DATA frames that add up to other than the declared length make the request
            // malformed (RFC 9114 §4.1.2): an origin would wait for the missing bytes.
            if self.declared.is_some_and(|n| n != self.body_read as u64) {
                return Error::e_explain(ErrorType::ReadError, "HTTP/3 request body shorter than its Content-Length");
            }
            return Ok(None);
        };
        if self.declared.is_some_and(|n| (self.body_read + bytes.len()) as u64 > n) {
            return Error::e_explain(ErrorType::ReadError, "HTTP/3 request body longer than its Content-Length");
        }
        Ok(Some(self.account(bytes)))
    }

    fn account(&mut self, bytes: Bytes) -> Bytes {
        self.body_read += bytes.len();
        if let Some((kept, truncated)) = self.retry_buffer.as_mut() {
            if kept.len() + bytes.len() > RETRY_BUFFER {
                *truncated = true;
            } else if !*truncated {
                kept.extend_from_slice(&bytes);
            }
        }
        bytes
    }
}

/// A write to the client, bounded by the write timeout when one is set.
async fn written<T>(
    limit: Option<Duration>,
    what: &'static str,
    f: impl std::future::Future<Output = std::result::Result<T, h3::error::StreamError>>,
) -> Result<T> {
    let res = match limit {
        Some(t) => tokio::time::timeout(t, f).await.or_err(ErrorType::WriteTimedout, what)?,
        None => f.await,
    };
    res.or_err(ErrorType::WriteError, what)
}

/// A response dropped unfinished (the origin failed mid-body, the request was cancelled) is
/// reset: quinn would otherwise end the stream cleanly, and a client would take a cut body
/// for the whole.
impl Drop for H3Session {
    fn drop(&mut self) {
        if !self.ended {
            self.ended = true;
            self.send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
        }
    }
}

async fn chunk(recv: Option<&mut RecvHalf>) -> Result<Option<Bytes>> {
    let Some(recv) = recv else { return Error::e_explain(ErrorType::ReadError, "the HTTP/3 request stream was given up") };
    let data = recv.recv_data().await.or_err(ErrorType::ReadError, "reading the HTTP/3 request body")?;
    Ok(data.map(|mut buf| buf.copy_to_bytes(buf.remaining())))
}

#[async_trait::async_trait]
impl Session for H3Session {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req
    }

    async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        self.read().await
    }

    async fn drain_request_body(&mut self) -> Result<()> {
        let limit = self.drain_timeout;
        let drain = async {
            while self.read().await?.is_some() {}
            Ok(())
        };
        match limit {
            Some(t) => tokio::time::timeout(t, drain).await.or_err(ErrorType::ReadTimedout, "draining the HTTP/3 request body")?,
            None => drain.await,
        }
    }

    async fn write_response_header(&mut self, resp: Box<ResponseHeader>, end: bool) -> Result<()> {
        self.send_header(&resp, end).await
    }

    async fn write_response_header_ref(&mut self, resp: &ResponseHeader, end: bool) -> Result<()> {
        self.send_header(resp, end).await
    }

    async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if self.response.is_none() {
            return Error::e_explain(ErrorType::InternalError, "an HTTP/3 body before its head");
        }
        if !data.is_empty() {
            let len = data.len();
            written(self.write_timeout, "writing the HTTP/3 response body", self.send.send_data(data)).await?;
            self.body_sent += len;
        }
        if end {
            self.end().await?;
        }
        Ok(())
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        written(self.write_timeout, "writing the HTTP/3 trailers", self.send.send_trailers(trailers)).await?;
        self.end().await
    }

    async fn response_duplex_vec(&mut self, tasks: Vec<HttpTask>) -> Result<bool> {
        let mut end_stream = false;
        for task in tasks {
            end_stream = match task {
                HttpTask::Header(header, end) => {
                    self.send_header(&header, end).await.map_err(|e| e.into_down())?;
                    end
                }
                HttpTask::Body(data, end) => {
                    if let Some(d) = data {
                        self.write_body(d, end).await.map_err(|e| e.into_down())?;
                    } else if end {
                        self.end().await.map_err(|e| e.into_down())?;
                    }
                    end
                }
                HttpTask::UpgradedBody(..) => {
                    return Error::e_explain(ErrorType::InternalError, "an upgraded body on an HTTP/3 stream");
                }
                HttpTask::Trailer(trailers) => {
                    match trailers {
                        Some(t) => self.write_trailers(*t).await.map_err(|e| e.into_down())?,
                        None => self.end().await.map_err(|e| e.into_down())?,
                    }
                    true
                }
                HttpTask::Done => {
                    self.end().await.map_err(|e| e.into_down())?;
                    true
                }
                HttpTask::Failed(e) => return Err(e),
            } || end_stream;
        }
        Ok(end_stream)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    fn set_total_drain_timeout(&mut self, timeout: Option<Duration>) {
        self.drain_timeout = timeout;
    }

    fn get_total_drain_timeout(&self) -> Option<Duration> {
        self.drain_timeout
    }

    fn request_summary(&self) -> String {
        format!("{} {}, HTTP/3", self.req.method, self.req.uri)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    async fn shutdown(&mut self, _code: u32, _ctx: &str) {
        self.abandon_stream();
    }

    async fn abandon(&mut self, _ctx: &str) {
        self.abandon_stream();
    }

    fn is_body_done(&mut self) -> bool {
        self.first.is_none() && (self.body_done || self.declared_empty())
    }

    async fn finish(&mut self) -> Result<()> {
        self.end().await
    }

    fn is_body_empty(&mut self) -> bool {
        self.body_read == 0 && self.is_body_done()
    }

    async fn read_body_or_idle(&mut self, no_body_expected: bool) -> Result<Option<Bytes>> {
        if no_body_expected || self.is_body_done() {
            // As HTTP/2's `idle()`: resolves only when the client is gone, so a long origin
            // response is not worked on for nobody.
            let why = self.conn.closed().await;
            return Error::e_explain(ErrorType::ConnectionClosed, format!("the HTTP/3 client went away: {why}"));
        }
        self.read().await
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn digest(&self) -> Option<&Digest> {
        Some(&self.digest)
    }

    fn digest_mut(&mut self) -> Option<&mut Digest> {
        Some(&mut self.digest)
    }

    fn client_addr(&self) -> Option<&SocketAddr> {
        self.client.as_ref()
    }

    fn server_addr(&self) -> Option<&SocketAddr> {
        self.server.as_ref()
    }

    fn pseudo_raw_h1_request_header(&self) -> Bytes {
        // What a background subrequest (stale-while-revalidate) is parsed from: an HTTP/1.1
        // head, as the vendored HTTP/2 session writes it.
        let mut h1 = self.req.clone();
        h1.set_version(http::Version::HTTP_11);
        pingora_core::protocols::http::v1::client::http_req_header_to_wire(&h1).map(|b| b.freeze()).unwrap_or_default()
    }

    fn enable_retry_buffering(&mut self) {
        self.retry_buffer.get_or_insert_with(|| (Vec::new(), false));
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.retry_buffer.as_ref().is_some_and(|(_, truncated)| *truncated)
    }

    fn get_retry_buffer(&self) -> Option<Bytes> {
        match &self.retry_buffer {
            Some((kept, false)) if !kept.is_empty() => Some(Bytes::copy_from_slice(kept)),
            _ => None,
        }
    }

    async fn finish_custom(&mut self) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_reader(
        &mut self,
    ) -> Option<Box<dyn futures_util::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>> {
        None
    }

    fn restore_custom_message_reader(
        &mut self,
        _reader: Box<dyn futures_util::Stream<Item = Result<Bytes>> + Unpin + Send + Sync + 'static>,
    ) -> Result<()> {
        Ok(())
    }

    fn take_custom_message_writer(&mut self) -> Option<Box<dyn CustomMessageWrite>> {
        None
    }

    fn restore_custom_message_writer(&mut self, _writer: Box<dyn CustomMessageWrite>) -> Result<()> {
        Ok(())
    }
}

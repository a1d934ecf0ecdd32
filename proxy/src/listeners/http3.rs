//! HTTP/3 on the TLS port over UDP (`tls.http3`): QUIC from quinn, with the TLS listener's
//! certificate resolver (SNI, SIGHUP reloads and ACME renewals reach it unchanged), HTTP/3
//! framing and QPACK from h3, and each request handed to the same `ProxyHttp` gateway as a
//! Pingora custom session ([`super::h3_session`]).
//!
//! Protections, from the first packet: a new client proves its address with a Retry when
//! more than `limits.quic_retry_above` handshakes are in progress; the handshake has
//! `limits.handshake_timeout`; a connection counts against `limits.max_connections` with the
//! TCP ones; the request head must arrive within `limits.head_timeout` and fit
//! `limits.max_headers` (QPACK's field section size); streams and flow-control windows are
//! bounded; an idle connection closes after `timeouts.client_idle`; 0-RTT is off, so no
//! request can be replayed.

use super::h3_session::{Conn, H3Session};
use super::ServerError;
use crate::config::{Limits, Timeouts};
use crate::edge::tls::CertStore;
use crate::gateway::Gateway;
use crate::telemetry::events;
use crate::telemetry::metrics::Metrics;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{ConnectionLimit, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::Digest;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests open at once on one connection (RFC 9114 §5: the client may open no more);
/// the figure HTTP/2 servers commonly use.
const MAX_STREAMS: u32 = 100;
/// Per stream and per connection, what a client may send before Portier reads it.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Malformed requests one connection may send before it is closed (H3_MESSAGE_ERROR), as
/// Pingora's HTTP/2 server bounds them: each costs a decode and a reset, and a client sending
/// only those is not a browser.
const MAX_MALFORMED: usize = 32;
/// How long a GOAWAY may take to write (a client can withhold the control stream's credit).
const GOAWAY_WRITE: Duration = Duration::from_secs(1);

/// The UDP socket on the TLS listener's port, bound before Pingora starts like the TCP ones.
pub(super) fn bind(addr: SocketAddr) -> Result<UdpSocket, ServerError> {
    let err = |source| ServerError::Bind { which: "tls.listen (UDP, tls.http3)", addr, source };
    let socket = UdpSocket::bind(addr).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket)
}

/// QUIC's TLS: 1.3 only (RFC 9001 §4.2), ALPN `h3`, no early data.
fn server_config(store: Arc<CertStore>, timeouts: &Timeouts) -> Result<quinn::ServerConfig, ServerError> {
    let tls_err = |reason: String| ServerError::Tls(crate::edge::tls::TlsError::Read { path: "tls.http3".into(), reason });
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| tls_err(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(timeouts.client_idle.get()).map_err(|e| tls_err(format!("timeouts.client_idle: {e}")))?;
    transport
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        // The client's control stream and its two QPACK streams, nothing else.
        .max_concurrent_uni_streams(3u32.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(u64::from(CONNECTION_WINDOW));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// The HTTP/3 listener, as a Pingora background service (its own runtime, stopped with the rest).
pub(super) struct Http3 {
    socket: Mutex<Option<UdpSocket>>,
    config: quinn::ServerConfig,
    proxy: Arc<HttpProxy<Gateway>>,
    gate: Arc<ConnectionLimit>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

/// What each connection and request reads, fixed at start like the TCP listeners' limits.
struct Settings {
    limits: Limits,
    /// A connection with no request open for this long is closed (GOAWAY, then close),
    /// whatever PINGs keep QUIC's own idle timer alive.
    idle: Duration,
    /// How long open requests may finish after GOAWAY when the process stops.
    grace: Duration,
}

impl Http3 {
    pub(super) fn new(
        socket: UdpSocket,
        store: Arc<CertStore>,
        proxy: Arc<HttpProxy<Gateway>>,
        gate: Arc<ConnectionLimit>,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> Result<Http3, ServerError> {
        let settings =
            Settings { limits: config.limits.clone(), idle: config.timeouts.client_idle.get(), grace: config.server.grace_period.get() };
        Ok(Http3 {
            socket: Mutex::new(Some(socket)),
            config: server_config(store, &config.timeouts)?,
            proxy,
            gate,
            settings: Arc::new(settings),
            metrics,
        })
    }
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for Http3 {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(socket) = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let local = socket.local_addr().ok();
        let endpoint = match quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(self.config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(e) => e,
            Err(e) => {
                events::emit("error", "http3_failed", &[("error", &e.to_string())]);
                return;
            }
        };
        let handshaking = Arc::new(AtomicUsize::new(0));
        let (goaway, _) = tokio::sync::watch::channel(false);
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => i,
                _ = shutdown.changed() => None,
            };
            let Some(incoming) = incoming else { break };
            // A spoofed source cannot make Portier answer with a handshake: under load (or
            // always, with 0) the client first echoes a Retry token from its real address
            // (quinn allows a Retry whenever the address is not yet validated).
            if handshaking.load(Ordering::Relaxed) >= self.settings.limits.quic_retry_above && !incoming.remote_address_validated() {
                let _ = incoming.retry();
                self.metrics.quic_handshake("retry");
                continue;
            }
            let Some(slot) = self.gate.acquire() else {
                incoming.refuse();
                self.metrics.quic_handshake("refused");
                continue;
            };
            // Counted before the task starts, so a burst sees every handshake it started.
            let counted = Handshaking::start(&handshaking);
            let conn = Connection {
                proxy: self.proxy.clone(),
                settings: self.settings.clone(),
                metrics: self.metrics.clone(),
                local,
                shutdown: shutdown.clone(),
                goaway: goaway.subscribe(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                conn.serve(incoming, counted).await;
            });
        }
        let _ = goaway.send(true);
        let _ = tokio::time::timeout(self.settings.grace, endpoint.wait_idle()).await;
        endpoint.close(0u32.into(), b"shutting down");
    }
}

struct Connection {
    proxy: Arc<HttpProxy<Gateway>>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    local: Option<SocketAddr>,
    shutdown: ShutdownWatch,
    goaway: tokio::sync::watch::Receiver<bool>,
}

/// Counts a handshake in progress for as long as it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Handshaking {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The requests open on one connection and when the last one ended.
struct Activity {
    open: AtomicUsize,
    malformed: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

/// One request's place in its connection's [`Activity`].
struct Open(Arc<Activity>);

impl Open {
    fn new(a: &Arc<Activity>) -> Open {
        a.open.fetch_add(1, Ordering::Relaxed);
        Open(a.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// Resolves once no request has been open for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let since = *self.last.lock().unwrap_or_else(|e| e.into_inner());
            if self.open.load(Ordering::Relaxed) == 0 && since.elapsed() >= idle {
                return;
            }
            let wait = if self.open.load(Ordering::Relaxed) == 0 { idle.saturating_sub(since.elapsed()) } else { idle };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

impl Connection {
    async fn serve(mut self, incoming: quinn::Incoming, counted: Handshaking) {
        let peer = incoming.remote_address();
        let limits = &self.settings.limits;
        let conn = match incoming.accept() {
            Ok(connecting) => tokio::time::timeout(limits.handshake_timeout.get(), connecting).await,
            Err(_) => {
                self.metrics.quic_handshake("failed");
                return;
            }
        };
        drop(counted);
        let Ok(Ok(conn)) = conn else {
            self.metrics.quic_handshake("failed");
            return;
        };
        self.metrics.quic_handshake("accepted");
        let digest =
            Digest { ssl_digest: Some(Arc::new(SslDigest::new("TLS13", "TLSv1.3", None, None, Vec::new()))), ..Default::default() };
        let mut builder = h3::server::builder();
        builder.max_field_section_size(limits.max_headers.bytes());
        let settings = builder.build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()));
        let Ok(Ok(mut h3)) = tokio::time::timeout(limits.head_timeout.get(), settings).await else { return };
        let shared = Conn {
            conn: conn.clone(),
            client: peer,
            server: self.local,
            digest,
            body_deadline: Some(pingora_core::protocols::http::BodyDeadline {
                base: limits.body_timeout.get(),
                min_rate: limits.min_body_rate.bytes(),
            }),
            // A response write that makes no progress for as long as a body may take fails.
            write_stall: limits.body_timeout.get(),
        };
        let activity =
            Arc::new(Activity { open: AtomicUsize::new(0), malformed: AtomicUsize::new(0), last: Mutex::new(tokio::time::Instant::now()) });
        let mut draining = false;
        loop {
            let next = tokio::select! {
                n = h3.accept() => n,
                _ = self.goaway.changed(), if !draining => {
                    // GOAWAY naming the next stream: every request accepted so far is served
                    // (RFC 9114 §5.2), the client sends new ones elsewhere.
                    draining = true;
                    // Bounded: GOAWAY goes on the control stream, whose credit a client may withhold.
                    let _ = tokio::time::timeout(GOAWAY_WRITE, h3.shutdown(1)).await;
                    continue;
                }
                _ = activity.idle_for(self.settings.idle) => {
                    // No request open: GOAWAY promising none, a moment for the client to close
                    // itself (and for the last bytes queued to leave), then the close.
                    let _ = tokio::time::timeout(GOAWAY_WRITE, h3.shutdown(0)).await;
                    let _ = tokio::time::timeout(GOAWAY_WRITE, conn.closed()).await;
                    conn.close(h3::error::Code::H3_NO_ERROR.value().try_into().unwrap_or_default(), b"idle");
                    break;
                }
            };
            let resolver = match next {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            let open = Open::new(&activity);
            let proxy = self.proxy.clone();
            let shutdown = self.shutdown.clone();
            let (head_timeout, body_timeout) = (limits.head_timeout.get(), limits.body_timeout.get());
            // The address of this moment: QUIC lets a client move (connection migration).
            let shared = Conn { client: conn.remote_address(), ..shared.clone() };
            let (activity, conn) = (activity.clone(), conn.clone());
            tokio::spawn(async move {
                let _open = open;
                // The head must come within the deadline, as on HTTP/1 and HTTP/2.
                let Ok(Ok((req, mut stream))) = tokio::time::timeout(head_timeout, resolver.resolve_request()).await else { return };
                let Some(header) = request_header(req) else {
                    // A malformed request is a stream error (RFC 9114 §4.1.2); the
                    // connection's other requests go on.
                    stream.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
                    if activity.malformed.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_MALFORMED {
                        conn.close(h3::error::Code::H3_MESSAGE_ERROR.value().try_into().unwrap_or_default(), b"malformed requests");
                    }
                    return;
                };
                let mut session = H3Session::new(header, stream, shared);
                // A declared body has the body's deadline to start; no body, the head's.
                let declared = session.declares_body();
                if session.look_ahead(if declared { body_timeout } else { head_timeout }).await.is_err() {
                    session.refuse_incomplete();
                    return;
                }
                let _ = proxy.process_new_http(ServerSession::new_custom(Box::new(session)), &shutdown).await;
            });
        }
    }
}

/// The request as Pingora holds it, version `HTTP/3`; a target with bytes no URI may hold
/// (h3 is lenient about `:path`) or conflicting `Content-Length` values is refused before
/// anything reads it, as the HTTP/2 session does.
fn request_header(req: http::Request<()>) -> Option<pingora_http::RequestHeader> {
    let (mut parts, ()) = req.into_parts();
    parts.version = http::Version::HTTP_3;
    let header = pingora_http::RequestHeader::from(parts);
    if header.raw_path().iter().any(|b| *b <= b' ' || *b == 0x7f) {
        return None;
    }
    let mut lengths = header.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let valid = std::str::from_utf8(first.as_bytes())
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok());
        if valid.is_none() || lengths.any(|v| v != first) {
            return None;
        }
    }
    // Connection-specific fields make an HTTP/3 request malformed (RFC 9114 §4.2); `te` may
    // only say `trailers`.
    let forbidden = [http::header::CONNECTION, http::header::TRANSFER_ENCODING, http::header::UPGRADE];
    if forbidden.iter().any(|f| header.headers.contains_key(f))
        || ["keep-alive", "proxy-connection"].iter().any(|f| header.headers.contains_key(*f))
        || header.headers.get_all(http::header::TE).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        return None;
    }
    Some(header)
}

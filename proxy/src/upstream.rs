//! Upstream pools: round-robin selection over healthy addresses, active HTTP health checks and
//! passive ejection after consecutive connection failures.

use crate::config::{Config, HealthCheck, HostPort, Upstream};
use pingora_error::ErrorType;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstreams.{pool}.tls.ca: {reason}")]
    Ca { pool: String, reason: String },
}

/// How often upstream host names are resolved again.
const RESOLVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How a pool talks TLS to its addresses.
pub(crate) struct PoolTls {
    /// Server name to send and verify; None: each address's host.
    pub sni: Option<String>,
    pub verify: bool,
    /// CAs to trust instead of the system's, for Pingora's connector.
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// The same for the health checks' client.
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTls").field("sni", &self.sni).field("verify", &self.verify).finish()
    }
}

impl PoolTls {
    fn new(pool: &str, cfg: &crate::config::UpstreamTls) -> Result<PoolTls, UpstreamError> {
        use rustls::pki_types::pem::PemObject;
        let err = |reason: String| UpstreamError::Ca { pool: pool.to_string(), reason };
        let ders: Vec<rustls::pki_types::CertificateDer<'static>> = match &cfg.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
                let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
                if certs.is_empty() {
                    return Err(err(format!("{}: no certificate in the file", path.display())));
                }
                certs
            }
            None => Vec::new(),
        };
        let mut roots = rustls::RootCertStore::empty();
        if ders.is_empty() {
            roots.extend(native_roots());
        } else {
            for d in &ders {
                roots.add(d.clone()).map_err(|e| err(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?;
        let client = if cfg.verify {
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
        };
        let ca = (!ders.is_empty()).then(|| {
            let wrapped: Vec<pingora_core::utils::tls::WrappedX509> =
                ders.iter().map(|d| pingora_core::utils::tls::WrappedX509::new(d.to_vec(), pingora_core::utils::tls::parse_x509)).collect();
            Arc::from(wrapped)
        });
        Ok(PoolTls { sni: cfg.sni.clone(), verify: cfg.verify, ca, client: Arc::new(client) })
    }
}

/// The system's trust store, for health checks of pools without their own `ca`.
fn native_roots() -> Vec<rustls::pki_types::TrustAnchor<'static>> {
    let mut store = rustls::RootCertStore::empty();
    for c in pingora_rustls::load_native_certs().unwrap_or_default() {
        let _ = store.add(c);
    }
    store.roots
}

/// `verify = false`: accept any certificate (an origin with a self-signed one on a private
/// network); signatures are still checked so the handshake means something.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
pub(crate) struct Backend {
    pub addr: HostPort,
    /// The address `addr` resolves to now; None while the name does not resolve (Compose
    /// starts containers in any order). Names are resolved again every few seconds.
    sock: parking_lot::RwLock<Option<SocketAddr>>,
    /// Result of the active health check (true when there is no check).
    up: AtomicBool,
    streak: AtomicU32,
    fails: AtomicU32,
    ejected_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Backend {
    pub(crate) fn healthy(&self) -> bool {
        self.sock().is_some() && self.up.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    pub(crate) fn sock(&self) -> Option<SocketAddr> {
        *self.sock.read()
    }

    /// Resolves a host name again (IP literals never change); says when the address moved.
    async fn re_resolve(&self, pool: &str) {
        if self.addr.host.parse::<std::net::IpAddr>().is_ok() {
            return;
        }
        let target = format!("{}:{}", self.addr.host, self.addr.port);
        let now = tokio::net::lookup_host(target).await.ok().and_then(|mut a| a.next());
        let before = self.sock();
        // A failed lookup keeps the last known address: DNS hiccups are not outages.
        *self.sock.write() = now.or(before);
        if now.is_some() && now != before {
            crate::telemetry::events::emit(
                "info",
                "upstream_address_changed",
                &[
                    ("pool", pool),
                    ("address", &self.addr.to_string()),
                    ("from", &before.map(|s| s.to_string()).unwrap_or_else(|| "unresolved".into())),
                    ("to", &now.map(|s| s.to_string()).unwrap_or_default()),
                ],
            );
        }
    }
}

#[derive(Debug)]
pub(crate) struct Pool {
    pub name: String,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
    max_fails: u32,
    fail_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    /// TLS to the addresses, when the pool says `tls`.
    pub tls: Option<PoolTls>,
    /// The pool's configuration as written: a reload keeps a pool whose text is unchanged,
    /// with its health and ejections.
    written: String,
}

impl Pool {
    pub(crate) fn new(name: &str, cfg: &Upstream) -> Result<Pool, UpstreamError> {
        let backends: Vec<Backend> = cfg
            .addresses
            .iter()
            .map(|a| {
                // A name that does not resolve yet is an address that is down until it does.
                let sock = a.resolve().ok();
                if sock.is_none() {
                    crate::telemetry::events::emit("warn", "upstream_unresolved", &[("pool", name), ("address", &a.to_string())]);
                }
                Backend {
                    addr: a.clone(),
                    sock: parking_lot::RwLock::new(sock),
                    up: AtomicBool::new(true),
                    streak: AtomicU32::new(0),
                    fails: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                }
            })
            .collect();
        Ok(Pool {
            name: name.to_string(),
            backends,
            next: AtomicUsize::new(0),
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout.get(),
            health_check: cfg.health_check.clone(),
            tls: cfg.tls.as_ref().map(|t| PoolTls::new(name, t)).transpose()?,
            written: written(cfg),
        })
    }

    /// The server name for TLS to `b` (the pool's `sni`, else the address's host).
    pub(crate) fn sni_for<'a>(&'a self, b: &'a Backend) -> &'a str {
        self.tls.as_ref().and_then(|t| t.sni.as_deref()).unwrap_or(&b.addr.host)
    }

    /// Next healthy address not in `tried`, round-robin. When every address is down the pool
    /// fails open (tries them anyway, round-robin): a health check that is wrong must not turn
    /// into an outage.
    pub(crate) fn select(&self, tried: &[usize]) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // Fail open over addresses that resolve; an unresolved one cannot be tried at all.
        let candidates = |want_healthy: bool| {
            (0..n).map(move |k| (start + k) % n).find(|i| {
                let b = &self.backends[*i];
                !tried.contains(i) && b.sock().is_some() && (!want_healthy || b.healthy())
            })
        };
        candidates(true).or_else(|| candidates(false))
    }

    pub(crate) fn report_connect_failure(&self, i: usize) {
        let Some(b) = self.backends.get(i) else {
            return;
        };
        let fails = b.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_fails > 0 && fails >= self.max_fails {
            b.ejected_until_ms.store(now_ms() + self.fail_timeout.as_millis() as u64, Ordering::Relaxed);
            b.fails.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn report_success(&self, i: usize) {
        if let Some(b) = self.backends.get(i) {
            b.fails.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn any_healthy(&self) -> bool {
        self.backends.iter().any(Backend::healthy)
    }

    /// One round of active checks over every address.
    pub(crate) async fn check_once(&self, hc: &HealthCheck) {
        // Few addresses per pool, each probe bounded by the check timeout: probing in turn is enough.
        let mut results = Vec::with_capacity(self.backends.len());
        for b in &self.backends {
            results.push(probe(b, hc, self.tls.as_ref().map(|t| (t.client.clone(), self.sni_for(b)))).await);
        }
        for (b, ok) in self.backends.iter().zip(results) {
            let was_up = b.up.load(Ordering::Relaxed);
            if ok == was_up {
                b.streak.store(0, Ordering::Relaxed);
                continue;
            }
            let streak = b.streak.fetch_add(1, Ordering::Relaxed) + 1;
            let needed = if ok { hc.healthy_after } else { hc.unhealthy_after };
            if streak >= needed {
                b.up.store(ok, Ordering::Relaxed);
                b.streak.store(0, Ordering::Relaxed);
                crate::telemetry::events::emit(
                    if ok { "info" } else { "warn" },
                    "upstream_health_changed",
                    &[("pool", &self.name), ("address", &b.addr.to_string()), ("healthy", &ok.to_string())],
                );
            }
        }
    }
}

/// GET the health path; 2xx or 3xx within the timeout is healthy.
async fn probe(b: &Backend, hc: &HealthCheck, tls: Option<(Arc<rustls::ClientConfig>, &str)>) -> bool {
    let host = b.addr.to_string();
    let req = crate::http_client::Request { method: "GET", target: &hc.path, host: &host, headers: &[], body: b"" };
    let Some(sock) = b.sock() else { return false };
    crate::http_client::send_over(sock, tls, &req, hc.timeout.get()).await.is_ok_and(|h| (200..400).contains(&h.status))
}

fn written(cfg: &Upstream) -> String {
    toml::to_string(cfg).unwrap_or_default()
}

/// Every pool, by name.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    pools: BTreeMap<String, Arc<Pool>>,
}

impl Upstreams {
    pub(crate) fn from_config(cfg: &Config) -> Result<Upstreams, UpstreamError> {
        let mut pools = BTreeMap::new();
        for (name, u) in &cfg.upstreams {
            pools.insert(name.clone(), Arc::new(Pool::new(name, u)?));
        }
        Ok(Upstreams { pools })
    }

    /// The pools of a reloaded configuration: an unchanged pool is the same pool (health,
    /// ejections and connections kept), a changed or new one starts afresh.
    pub(crate) fn reconfigured(&self, cfg: &Config) -> Result<Upstreams, UpstreamError> {
        let mut pools = BTreeMap::new();
        for (name, u) in &cfg.upstreams {
            let pool = match self.pools.get(name) {
                Some(old) if old.written == written(u) => old.clone(),
                _ => Arc::new(Pool::new(name, u)?),
            };
            pools.insert(name.clone(), pool);
        }
        Ok(Upstreams { pools })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Runs the active checks of every pool that has one until `shutdown` flips.
    pub(crate) async fn run_health_checks(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        // Names are resolved again every few seconds: a recreated container gets a new IP.
        let pools: Vec<Arc<Pool>> = self.pools.values().cloned().collect();
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                for pool in &pools {
                    for b in &pool.backends {
                        b.re_resolve(&pool.name).await;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESOLVE_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
        for pool in self.pools.values().cloned() {
            let Some(hc) = pool.health_check.clone() else {
                continue;
            };
            let mut stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    pool.check_once(&hc).await;
                    tokio::select! {
                        _ = tokio::time::sleep(hc.interval.get()) => {}
                        _ = stop.changed() => return,
                    }
                }
            }));
        }
        let _ = shutdown.changed().await;
        for t in tasks {
            t.abort();
        }
    }
}

/// How the origin failed: the `kind` label of `upstream_errors_total`, counted once per failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    /// Refused, unreachable: every connect attempt counts (a retry may follow).
    Connect,
    ConnectTimeout,
    /// Connected, but no answer within `timeouts.read` / `timeouts.write`.
    Timeout,
    /// Reset, closed early, or an invalid response.
    Other,
}

impl UpstreamErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Other => "other",
        }
    }

    /// The `Cache-Status` detail of the error page.
    pub(crate) fn detail(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "origin-unreachable",
            UpstreamErrorKind::ConnectTimeout => "origin-connect-timeout",
            UpstreamErrorKind::Timeout => "origin-timeout",
            UpstreamErrorKind::Other => "origin-error",
        }
    }
}

impl UpstreamErrorKind {
    pub(crate) fn of(t: &ErrorType) -> UpstreamErrorKind {
        use ErrorType::*;
        match t {
            ConnectTimedout => UpstreamErrorKind::ConnectTimeout,
            ConnectRefused | ConnectNoRoute | ConnectError | BindError | ConnectProxyFailure => UpstreamErrorKind::Connect,
            ReadTimedout | WriteTimedout => UpstreamErrorKind::Timeout,
            _ => UpstreamErrorKind::Other,
        }
    }

    /// A failure before the connection was made: the connect timed out, or anything else
    /// kept it from being made (refused, no route, a failed TLS handshake).
    pub(crate) fn of_connect(t: &ErrorType) -> UpstreamErrorKind {
        match t {
            ErrorType::ConnectTimedout => UpstreamErrorKind::ConnectTimeout,
            _ => UpstreamErrorKind::Connect,
        }
    }

    pub(crate) fn is_connect(self) -> bool {
        matches!(self, UpstreamErrorKind::Connect | UpstreamErrorKind::ConnectTimeout)
    }
}

/// A failed proxy attempt, classified once: the status the client gets, and when the origin
/// was at fault, how (the metric's `kind`, the `Cache-Status` detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    /// 504 for timeouts, 502 for anything else upstream, 400 for a malformed request, 0 when
    /// the client went away (nothing to answer).
    pub(crate) status: u16,
    pub(crate) kind: Option<UpstreamErrorKind>,
}

impl Failure {
    pub(crate) fn of(e: &pingora_error::Error) -> Failure {
        use pingora_error::ErrorSource;
        use ErrorType::*;
        let status = match e.etype() {
            HTTPStatus(code) => *code,
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 502,
            },
        };
        let kind = (e.esource() == &ErrorSource::Upstream).then(|| UpstreamErrorKind::of(e.etype()));
        Failure { status, kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addrs: &[&str], max_fails: u32) -> Pool {
        let cfg = Upstream {
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            health_check: None,
            max_fails,
            fail_timeout: crate::config::HumanDuration::from_secs(10),
            tls: None,
        };
        Pool::new("t", &cfg).unwrap()
    }

    #[test]
    fn round_robin_skips_ejected_and_fails_open() {
        let p = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], 1);
        let picks: Vec<usize> = (0..6).map(|_| p.select(&[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        p.report_connect_failure(1);
        assert!((0..6).all(|_| p.select(&[]).unwrap() != 1));
        assert_eq!(p.select(&[0, 2]), Some(1), "fails open when only ejected ones are left");
        assert_eq!(p.select(&[0, 1, 2]), None);
    }
}

//! Process assembly: binds the listeners, builds the Pingora server and its services, and
//! handles graceful shutdown. One file per listener: [`plain`] (HTTP/1.1 in clear),
//! [`tls`] (HTTPS, HTTP/2 by ALPN), [`http3`] (HTTP/3 over QUIC on the TLS port), [`admin`]
//! (the admin API).

mod admin;
mod h3_session;
mod http3;
mod plain;
mod tls;

use crate::config::Config;
use crate::gateway::{Gateway, State, DRAINING, IN_FLIGHT};
use crate::telemetry::events;
use crate::telemetry::traces::Tracing;
use crate::upstream::{UpstreamError, Upstreams};

use async_trait::async_trait;
use pingora_core::listeners::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Traces(#[from] crate::telemetry::traces::TraceError),
    #[error(transparent)]
    Profiling(#[from] crate::telemetry::profiling::ProfileError),

    #[error("cannot set up metrics: {0}")]
    Metrics(prometheus::Error),
    #[error(transparent)]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error("cannot listen on {addr} ({which}): {source}")]
    Bind { which: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// A listener bound before Pingora starts, so `:0` works and the real port is known (and
/// printed) before the first request.
struct Bound {
    addr: SocketAddr,
    listener: TcpListener,
}

fn bind(which: &'static str, addr: SocketAddr) -> Result<Bound, ServerError> {
    let err = |source| ServerError::Bind { which, addr, source };
    let listener = TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok(Bound { addr, listener })
}

/// Hands a pre-bound socket to a Pingora listening service through the fd table Pingora uses
/// for zero-downtime upgrades: it finds the address there and adopts the socket.
struct PreBound<S> {
    inner: S,
    sockets: Vec<Bound>,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for PreBound<S> {
    async fn start_service(&mut self, fds: Option<ListenFds>, shutdown: ShutdownWatch, per_fd: usize, ready: ServiceReadyNotifier) {
        if let Some(table) = &fds {
            let mut t = table.lock();
            for b in self.sockets.drain(..) {
                t.add(b.addr.to_string(), b.listener.into_raw_fd());
            }
        }
        self.inner.start_service(fds, shutdown, per_fd, ready).await
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
}

/// SIGTERM and SIGINT both stop accepting and let in-flight requests finish; the process exits
/// as soon as none is left, or when the grace period ends.
struct GracefulSignals {
    grace: Duration,
    state: Arc<State>,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            // Without signal handlers there is no way to be told to stop: wait forever.
            std::future::pending::<()>().await;
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        DRAINING.store(true, Ordering::SeqCst);
        let in_flight = IN_FLIGHT.load(Ordering::SeqCst).to_string();
        events::emit(
            "info",
            "shutdown_started",
            &[("signal", name), ("in_flight", &in_flight), ("grace_period", &format!("{:?}", self.grace))],
        );
        let grace = self.grace;
        let state = self.state.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            // Pingora stops the listeners once this returns; give it a moment before trusting 0.
            std::thread::sleep(Duration::from_millis(100));
            while IN_FLIGHT.load(Ordering::SeqCst) > 0 && start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left = IN_FLIGHT.load(Ordering::SeqCst);
            // Hand the last spans to the collector (bounded by the exporter's timeout).
            if let Some(t) = &state.tracing {
                t.shutdown();
            }
            state.access_log.flush();
            let level = if left == 0 { "info" } else { "warn" };
            events::emit(level, "shutdown_complete", &[("in_flight_abandoned", &left.to_string())]);
            // Requests cut off at the end of the grace period are a failed shutdown.
            std::process::exit(if left == 0 { 0 } else { 1 });
        });
        ShutdownSignal::GracefulTerminate
    }
}

/// The addresses actually bound (after `:0` resolution).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundAddrs {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, when `[tls]` is configured.
    pub tls: Option<SocketAddr>,
}

/// What a client connection buffers before writing. Pingora's default is one MSS (1,460
/// bytes): a 2 KB hit went out as two `sendto`s, its head and then its body. 8 KiB (nginx's
/// `proxy_buffer_size` is one page, and it buffers whole responses by default) holds the head
/// and body of a typical API answer, so one write sends both. Real-time responses are not held
/// back: Pingora flushes chunked and close-delimited bodies at every chunk; a body of known
/// length goes out when 8 KiB have gathered or it is complete (a chunk that size or larger is
/// written straight through).
const WRITE_BUFFER: usize = 8 * 1024;

/// Builds everything and blocks until shutdown. `on_bound` runs once the listeners are bound,
/// with their real addresses.
/// `source` is the file `config` came from: what a reload reads again (none for `portier proxy`).
pub(crate) fn run(mut config: Config, source: Option<std::path::PathBuf>, on_bound: impl FnOnce(BoundAddrs)) -> Result<(), ServerError> {
    crate::telemetry::library_log::install(|k| std::env::var(k).ok());
    let upstreams = Arc::new(Upstreams::from_config(&config)?);
    let public = bind("listen.public", config.listen.public.0)?;
    let admin = bind("listen.admin", config.listen.admin.0)?;
    let tls = match &config.tls {
        Some(t) => {
            let (store, certs) = crate::edge::tls::CertStore::load(t)?;
            crate::edge::tls::announce(&certs, "tls_certificates_loaded");
            let bound = bind("tls.listen", t.listen.0)?;
            // The same port number over UDP, so `Alt-Svc` names one port for both.
            let udp = if t.http3 { Some(http3::bind(bound.addr)?) } else { None };
            Some((Arc::new(store), bound, udp))
        }
        None => None,
    };
    let addrs = BoundAddrs { public: public.addr, admin: admin.addr, tls: tls.as_ref().map(|(_, b, _)| b.addr) };
    // The redirect to HTTPS names the port actually bound (`:0` in the config is not a port).
    if let (Some(t), Some(addr)) = (config.tls.as_mut(), addrs.tls) {
        t.listen = crate::config::ListenAddr(addr);
    }

    let threads = match config.server.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        n => n,
    };
    let grace = config.server.grace_period.get();
    let conf = ServerConf {
        threads,
        // Our signal watcher exits the process once drained; this is only the upper bound.
        grace_period_seconds: Some(grace.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);

    let tel = crate::telemetry::resolve(&config.telemetry, |k| std::env::var(k).ok());
    let statuses = crate::cache::status::ALL.map(|s| s.as_str());
    let purges = crate::cache::purge::PurgeReason::ALL.map(|r| r.as_str());
    let auth = crate::edge::access::CheckOutcome::ALL.map(|o| o.as_str());
    let labels = crate::telemetry::metrics::StartLabels { cache_statuses: &statuses, purge_reasons: &purges, auth_outcomes: &auth };
    let metrics = crate::telemetry::metrics::Metrics::new(&tel.service_name, &labels).map_err(ServerError::Metrics)?;
    // Built before any runtime exists: the OTLP client is a blocking one on its own thread.
    let tracing = tel.traces.as_ref().map(Tracing::start).transpose()?;
    let tier_metrics = crate::cache::TierMetrics::register(metrics.registry()).map_err(ServerError::Metrics)?;
    let state = Arc::new(State::new(config, upstreams.clone(), metrics, tier_metrics, tracing));
    if let Some(url) = &tel.pyroscope_url {
        let interval = state.config.telemetry.profiling.upload_interval.map(|d| d.get()).unwrap_or(Duration::from_secs(10));
        state.profiling.start_push(url, &tel.service_name, interval)?;
        events::emit("info", "profiling_push_started", &[("url", url), ("application", &tel.service_name)]);
    }
    let live = Arc::new(arc_swap::ArcSwap::new(state.clone()));
    let state_http3 = state.config.tls.as_ref().is_some_and(|t| t.http3);
    let certs = tls.as_ref().map(|(store, _, _)| store.clone());
    let reloader = Arc::new(crate::control::reload::Reloader::new(source, live.clone(), certs));
    reloader.clone().reload_on_sighup();
    let mut proxy = pingora_proxy::http_proxy_service_with_name(&server.configuration, Gateway { live: live.clone() }, "portier");
    if let Some(app) = proxy.app_logic_mut() {
        app.server_options =
            Some(crate::edge::limits::server_options(&state.config.limits, &state.config.timeouts, state.connections.clone()));
    }
    let buffers = L4BufferSettings::default().write(WRITE_BUFFER);
    plain::listen(&mut proxy, addrs.public, buffers);
    let mut sockets = vec![public];
    let mut quic = None;
    if let (Some((store, bound, udp)), Some(t)) = (tls, &state.config.tls) {
        tls::listen(&mut proxy, bound.addr, buffers, store.clone(), t)?;
        sockets.push(bound);
        if let Some(udp) = udp {
            // Its own `HttpProxy` over the same gateway: Pingora's service owns the TCP one.
            let mut h3 = pingora_proxy::HttpProxy::new(Gateway { live: live.clone() }, server.configuration.clone());
            h3.server_options =
                Some(crate::edge::limits::server_options(&state.config.limits, &state.config.timeouts, state.connections.clone()));
            h3.handle_init_modules();
            let listener =
                http3::Http3::new(udp, store.clone(), Arc::new(h3), state.connections.clone(), &state.config, state.metrics.clone())?;
            let mut service = pingora_core::services::background::background_service("http3", listener);
            service.threads = Some(threads);
            quic = Some(service);
        }
        if let Some(acme) = &t.acme {
            crate::control::acme::start(acme.clone(), store.clone(), state.challenges.clone());
        }
    }
    server.add_service(PreBound { inner: proxy, sockets });
    if let Some(service) = quic {
        server.add_service(service);
    }
    server.add_service(PreBound { inner: admin::service(addrs.admin, live.clone(), reloader.clone()), sockets: vec![admin] });

    server.add_service(pingora_core::services::background::background_service("health-checks", HealthChecks { live, reloader }));

    events::emit(
        "info",
        "listening",
        &[
            ("public", &addrs.public.to_string()),
            ("admin", &addrs.admin.to_string()),
            ("tls", &addrs.tls.map(|a| a.to_string()).unwrap_or_default()),
            ("http3", &addrs.tls.filter(|_| state_http3).map(|a| a.to_string()).unwrap_or_default()),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
    );
    on_bound(addrs);
    server.run(RunArgs { shutdown_signal: Box::new(GracefulSignals { grace, state }) });

    Ok(())
}

/// Checks the pools of the live state; after a reload, the new ones.
struct HealthChecks {
    live: Arc<arc_swap::ArcSwap<State>>,
    reloader: Arc<crate::control::reload::Reloader>,
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let checks = tokio::spawn(self.live.load().upstreams.clone().run_health_checks(stopped));
            let done = tokio::select! {
                _ = shutdown.changed() => true,
                _ = self.reloader.swapped.notified() => false,
            };
            let _ = stop.send(true);
            let _ = checks.await;
            if done {
                return;
            }
        }
    }
}

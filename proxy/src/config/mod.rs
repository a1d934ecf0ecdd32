//! Portier's configuration: typed TOML sections, environment overrides and validation that
//! reports every problem at once with its key path.

mod address;
pub(crate) mod certs;
mod load;
pub(crate) mod path;
mod pattern;
mod units;

pub(crate) use address::{HostPort, ListenAddr};
pub(crate) use load::{load_file, load_str};
pub(crate) use pattern::{unmapped, BcryptHash, Cidr, DictionaryMatch, HostPattern, Method, PathPattern, Pseudonym};
pub(crate) use units::{ByteSize, HumanDuration};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Config {
    pub listen: Listen,
    pub server: ServerSection,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub upstreams: BTreeMap<String, Upstream>,
    pub routes: Vec<Route>,
    pub cache: CacheConfig,
    pub compression: CompressionConfig,
    pub tls: Option<TlsConfig>,
    pub purge: PurgeConfig,
    pub invalidation: Vec<InvalidationRule>,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Telemetry {
    /// `service_name` label of the span metrics and `service.name` of the traces; the
    /// runbook's queries use `proxy`. `OTEL_SERVICE_NAME` overrides it when this is unset.
    pub service_name: Option<String>,
    /// Record the per-request series (span metrics, cache request counters). Turning this
    /// off is for measuring their cost; cache and upstream gauges stay.
    pub metrics: bool,
    pub access_log: AccessLogConfig,
    pub traces: TracesConfig,
    pub profiling: ProfilingConfig,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            service_name: None,
            metrics: true,
            access_log: AccessLogConfig::default(),
            traces: TracesConfig::default(),
            profiling: ProfilingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Json,
    Text,
    Off,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AccessLogConfig {
    /// One line per request on stdout: `json` (for promtail/Loki), `text`, or `off`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TracesConfig {
    /// OTLP/HTTP endpoint, e.g. `http://otel-collector:4318` (`/v1/traces` is appended).
    /// Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: traces are off.
    pub endpoint: Option<String>,
    /// Fraction of new traces sampled (parent-based: a sampled `traceparent` is followed).
    /// Unset: `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, else 1.0.
    pub sample_ratio: Option<f64>,
    /// Spans waiting for export beyond this are dropped (and counted), never waited for.
    pub queue_size: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProfilingConfig {
    /// Pyroscope server to push CPU profiles to, e.g. `http://pyroscope:4040`.
    /// Unset: `PYROSCOPE_SERVER_ADDRESS`; neither: no push.
    pub pyroscope_url: Option<String>,
    /// How often profiles are pushed.
    pub upload_interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Listen {
    /// The public listener, where clients connect.
    pub public: ListenAddr,
    /// The admin listener (health, readiness, metrics, cache API). Never the public one.
    pub admin: ListenAddr,
    /// Bearer token for the admin endpoints that change state or cost CPU (purge, pprof).
    /// Without one they answer only on a loopback admin address. `PORTIER_ADMIN_TOKEN` too.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Host names the admin listener answers to besides IP addresses, `localhost` and
    /// `*.localhost` (a name a browser was led to by DNS rebinding is refused):
    /// `["proxy"]` for a Prometheus scraping `proxy:9901`. `PORTIER_ADMIN_HOSTS` too.
    #[serde(default)]
    pub admin_hosts: Vec<HostPattern>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            public: ListenAddr(([0, 0, 0, 0], 8080).into()),
            admin: ListenAddr(([127, 0, 0, 1], 9901).into()),
            admin_token: None,
            admin_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSection {
    /// Worker threads for the public listener; 0 means one per CPU.
    pub threads: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub grace_period: HumanDuration,
    /// Peers (load balancers) whose `X-Forwarded-For` names the real client: for requests
    /// from them, allow/deny rules, logs and `X-Forwarded-For` use the address they report.
    pub trusted_proxies: Vec<Cidr>,
    /// This Portier's name in `Cache-Status` (its member's identifier) and `Via`: give each
    /// tier its own (`portier-front`) so a chain of them reads apart. `PORTIER_SERVER_NAME` too.
    pub name: Pseudonym,
    /// Add `Via` (RFC 9110 §7.6.3) to forwarded requests and to responses.
    pub via: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: 0,
            grace_period: HumanDuration::from_secs(10),
            trusted_proxies: Vec::new(),
            name: Pseudonym::default(),
            via: true,
        }
    }
}

/// What one client may send or hold, each refused with its own status.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// Length of the request target (414).
    pub max_uri: ByteSize,
    /// One header field, name and value (431).
    pub max_header: ByteSize,
    /// All header fields together (431).
    pub max_headers: ByteSize,
    /// Number of header fields (431); Pingora's parser stops at 256.
    pub max_header_count: usize,
    /// The whole request head, counted from its first byte (408, then the connection
    /// closes): a client sending a byte at a time cannot hold a connection (slowloris).
    /// Also from the connection's start for its first request, so a connection that sends
    /// nothing is closed then too; on HTTP/2, the preface and the first request's HEADERS.
    pub head_timeout: HumanDuration,
    /// The TLS handshake, from accept (a connection that never sends a ClientHello).
    pub handshake_timeout: HumanDuration,
    /// A request body may take this long, plus one second per `min_body_rate` bytes
    /// received; slower, the request fails and the connection closes (HTTP/1 and HTTP/2).
    pub body_timeout: HumanDuration,
    /// Bytes per second that extend `body_timeout` (0: the whole body within it).
    pub min_body_rate: ByteSize,
    /// Request body on a route that sets no `max_body` (413).
    pub max_body: ByteSize,
    /// Connections served at once on the public listeners (beyond: 503 and close); 0 means
    /// three quarters of the process's open-file limit, so sockets to origins remain.
    pub max_connections: usize,
    /// Requests in flight at once from one client address (beyond: 503).
    pub max_requests_per_client: usize,
    /// What `Retry-After` says on those 503s.
    pub retry_after: HumanDuration,
    /// QUIC handshakes in progress above which a new HTTP/3 client must first prove its
    /// address with a Retry round trip (RFC 9000 §8.1), so spoofed sources cannot make
    /// Portier send handshakes to others; 0: every client, always.
    pub quic_retry_above: usize,
}

/// Pingora's HTTP/1 parser refuses more header fields than this whatever the configuration.
pub(crate) const PARSER_MAX_HEADER_COUNT: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri: ByteSize(8 * 1024),
            max_header: ByteSize(8 * 1024),
            max_headers: ByteSize(32 * 1024),
            max_header_count: 100,
            head_timeout: HumanDuration::from_secs(10),
            handshake_timeout: HumanDuration::from_secs(10),
            body_timeout: HumanDuration::from_secs(20),
            min_body_rate: ByteSize(500),
            max_body: ByteSize::mib(10),
            max_connections: 0,
            max_requests_per_client: 256,
            retry_after: HumanDuration::from_secs(1),
            quic_retry_above: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Timeouts {
    /// TCP connect to an upstream address.
    pub connect: HumanDuration,
    /// Waiting for the upstream's response headers and between body reads.
    pub read: HumanDuration,
    /// Writing the request to the upstream.
    pub write: HumanDuration,
    /// How long an unused upstream keep-alive connection is kept. Shorter than the 5 s
    /// Node.js closes idle sockets after, so Portier never reuses a socket the origin is closing.
    pub upstream_idle: HumanDuration,
    /// How long an idle client keep-alive connection is kept.
    pub client_idle: HumanDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: HumanDuration::from_secs(2),
            read: HumanDuration::from_secs(30),
            write: HumanDuration::from_secs(30),
            upstream_idle: HumanDuration::from_secs(4),
            client_idle: HumanDuration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    /// One or more `host:port`; requests go round-robin over the healthy ones.
    pub addresses: Vec<HostPort>,
    /// Active HTTP health check; without it an address is healthy unless passively ejected.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Consecutive connection failures that eject an address (passive health check); 0 = never.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a passively ejected address is skipped.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: HumanDuration,
    /// Talk TLS to these addresses (health checks too).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTls {
    /// Server name sent (SNI) and verified; default: the address's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the origin's certificate and name (default true).
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM file of the CAs to trust instead of the system's.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

fn default_max_fails() -> u32 {
    2
}
fn default_fail_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthCheck {
    /// Path requested with GET; a 2xx or 3xx answer means healthy.
    pub path: String,
    pub interval: HumanDuration,
    pub timeout: HumanDuration,
    /// Consecutive failures before an address is marked down.
    pub unhealthy_after: u32,
    /// Consecutive successes before a down address is marked up again.
    pub healthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/health".into(),
            interval: HumanDuration::from_secs(5),
            timeout: HumanDuration::from_secs(1),
            unhealthy_after: 1,
            healthy_after: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Host to match (`example.com` or `*.example.com`); absent = any host.
    #[serde(default)]
    pub host: Option<HostPattern>,
    /// `/api/*` matches the prefix `/api/` (and `/api` itself); anything else is an exact path.
    pub path: PathPattern,
    /// The upstream pool that serves this route.
    pub pool: String,
    /// `false` turns the cache off for this route (every response says `X-Cache: BYPASS`).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Freshness for responses whose origin sends none (no `max-age`, `s-maxage`, `Expires`).
    #[serde(default)]
    pub ttl: Option<HumanDuration>,
    /// stale-while-revalidate window when the origin gives none.
    #[serde(default)]
    pub stale_while_revalidate: Option<HumanDuration>,
    /// stale-if-error window when the origin gives none.
    #[serde(default)]
    pub stale_if_error: Option<HumanDuration>,
    /// `"generate"`: give cacheable responses without an ETag a strong one (hash of the body).
    #[serde(default)]
    pub etag: EtagMode,
    /// Store responses that carry `Set-Cookie` (the cookie itself is never stored).
    #[serde(default)]
    pub cache_set_cookie: bool,
    /// Codings offered for text responses, in the server's order of preference; `[]` turns
    /// compression off on this route.
    #[serde(default = "default_codings")]
    pub compress: Vec<Coding>,
    /// RFC 9842: responses on this route whose path matches become compression dictionaries
    /// (`Use-As-Dictionary: match="…"`), and browsers that hold one get later versions as
    /// `dcz` deltas against it.
    #[serde(default)]
    pub dictionary: Option<DictionaryMatch>,
    /// HTTP Basic authentication, checked before the cache.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Client addresses allowed on this route (empty: everyone), answered 403 otherwise.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// Client addresses refused on this route (403), even when `allow` lists them.
    #[serde(default)]
    pub deny: Vec<Cidr>,
    /// Largest request body accepted on this route (413); `limits.max_body` when absent.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuth {
    /// Shown by the browser's login prompt.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, BcryptHash>,
}

fn default_codings() -> Vec<Coding> {
    vec![Coding::Zstd, Coding::Br, Coding::Gzip]
}

fn default_realm() -> String {
    "restricted".into()
}

fn yes() -> bool {
    true
}

impl Route {
    /// A route with every cache option at its default.
    pub(crate) fn new(host: Option<HostPattern>, path: PathPattern, pool: &str) -> Route {
        Route {
            host,
            path,
            pool: pool.to_string(),
            cache: true,
            ttl: None,
            stale_while_revalidate: None,
            stale_if_error: None,
            etag: EtagMode::Origin,
            cache_set_cookie: false,
            compress: default_codings(),
            dictionary: None,
            basic_auth: None,
            allow: Vec::new(),
            deny: Vec::new(),
            max_body: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EtagMode {
    /// Use the origin's ETag, if any.
    #[default]
    Origin,
    /// Add a strong ETag (hash of the body) to cacheable responses that lack one.
    Generate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheConfig {
    pub enabled: bool,
    /// Memory budget for stored responses, headers and bodies together.
    pub max_size: ByteSize,
    /// Larger responses stream through uncached.
    pub max_object_size: ByteSize,
    /// How long concurrent misses for one key wait for the first one's response.
    pub lock_timeout: HumanDuration,
    /// Heuristic freshness (10% of the time since `Last-Modified`, at most a day) for
    /// responses without explicit freshness, where RFC 9111 §4.2.2 allows it.
    pub heuristic: bool,
    /// Honour client `Cache-Control: no-cache` / `max-age` / `Pragma: no-cache` by revalidating.
    pub honor_client_no_cache: bool,
    /// When the origin refuses, resets, times out or answers 5xx, a stored response this
    /// far past its freshness is served stale (RFC 9111 §4.2.4), unless it says
    /// `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`. The response's own
    /// `stale-if-error` and the route's `stale_if_error` come first; `"0s"` turns it off.
    pub stale_if_error: HumanDuration,
    /// A second tier shared by replicas (Redis or Valkey). Off unless `url` is set.
    pub shared: SharedCacheConfig,
    /// A tier on local disk that survives restarts. Off unless `path` is set.
    pub disk: DiskCacheConfig,
}

/// `[cache.disk]`: one file per stored response under `path`, behind the memory tier (and
/// before Redis), read back after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DiskCacheConfig {
    /// A directory Portier owns (created if missing); `PORTIER_CACHE_DISK_PATH` sets it too.
    pub path: Option<std::path::PathBuf>,
    /// Disk budget for stored files; the least recently used go first past it.
    pub max_size: ByteSize,
    /// Larger responses stay in memory only (each disk hit reads its file whole).
    pub max_object_size: ByteSize,
}

impl Default for DiskCacheConfig {
    fn default() -> Self {
        DiskCacheConfig { path: None, max_size: ByteSize::mib(1024), max_object_size: ByteSize::mib(8) }
    }
}

/// `[cache.shared]`: Redis behind each replica's memory cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SharedCacheConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://...`; `PORTIER_CACHE_SHARED_URL`
    /// and `portier proxy --shared-cache` set it too.
    pub url: Option<RedisUrl>,
    /// Longest wait for one Redis call before the request goes on without it.
    pub timeout: HumanDuration,
    /// Larger responses stay in the memory tier only.
    pub max_object_size: ByteSize,
    /// Prefix of every key and of the purge channel, so several sites can share one Redis.
    pub prefix: String,
}

impl Default for SharedCacheConfig {
    fn default() -> Self {
        SharedCacheConfig {
            url: None,
            timeout: HumanDuration::from_millis(100),
            max_object_size: ByteSize::mib(1),
            prefix: "portier".into(),
        }
    }
}

/// A Redis URL checked by the client crate when the configuration loads. Written back with
/// its password hidden.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct RedisUrl(String);

impl TryFrom<String> for RedisUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let shown = || format!("\"{}\"", RedisUrl(s.into()).redacted());
        if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
            return Err(format!("{}: expected redis://host:port/db or rediss://...", shown()));
        }
        redis::IntoConnectionInfo::into_connection_info(s).map_err(|e| format!("{}: {e}", shown()))?;
        Ok(RedisUrl(s.to_string()))
    }
}

impl RedisUrl {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub(crate) fn redacted(&self) -> String {
        match self.0.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(auth, host)| (scheme, auth, host))) {
            Some((scheme, auth, host)) => {
                let user = auth.split_once(':').map_or("", |(u, _)| u);
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_size: ByteSize::mib(256),
            max_object_size: ByteSize::mib(8),
            lock_timeout: HumanDuration::from_secs(10),
            heuristic: true,
            honor_client_no_cache: true,
            stale_if_error: HumanDuration::from_secs(3600),
            shared: SharedCacheConfig::default(),
            disk: DiskCacheConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PurgeConfig {
    /// `PURGE` on the public listener is allowed from these client addresses...
    pub allow_from: Vec<std::net::IpAddr>,
    /// ...or with `Authorization: Bearer <token>` (or `X-Purge-Token: <token>`).
    pub token: Option<String>,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        PurgeConfig { allow_from: vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()], token: None }
    }
}

/// After a successful (2xx/3xx) request matching `method` and `path`, purge the cached
/// responses under `prefixes` (same host) — only those whose query parameter `match_param`
/// equals the request's (taken from its query string, or a top-level field of a small JSON body).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvalidationRule {
    pub method: Method,
    /// Exact path, or a prefix ending in `*`.
    pub path: PathPattern,
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub match_param: Option<String>,
}

pub(crate) const TOP_LEVEL_KEYS: &[&str] =
    &["listen", "server", "timeouts", "limits", "upstreams", "routes", "cache", "compression", "tls", "purge", "invalidation", "telemetry"];

/// HTTPS: a TLS listener beside the plain one, HTTP/2 by ALPN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// Where HTTPS is served, e.g. `0.0.0.0:8443`.
    pub listen: ListenAddr,
    /// PEM files; the one whose names match the client's SNI is served, else the first.
    /// Reloaded from disk on SIGHUP. May be empty when `acme` provides the certificate.
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// Offer HTTP/2 (ALPN `h2`) next to HTTP/1.1.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Serve HTTP/3 over QUIC on the same port (UDP), with the same certificates, and
    /// advertise it with `Alt-Svc` on HTTPS responses.
    #[serde(default)]
    pub http3: bool,
    /// The UDP port `Alt-Svc` names, when clients reach it on another than `listen`'s (a
    /// Compose mapping `443:8443/udp`); default: `listen`'s port.
    #[serde(default)]
    pub http3_port: Option<std::num::NonZeroU16>,
    /// Answer plain-HTTP requests with a 308 to the same URL over HTTPS.
    #[serde(default)]
    pub redirect_http: bool,
    /// `Strict-Transport-Security` on HTTPS responses, e.g. `"max-age=31536000"`.
    #[serde(default)]
    pub hsts: Option<String>,
    /// Certificates obtained and renewed automatically (HTTP-01 on the public listener).
    #[serde(default)]
    pub acme: Option<AcmeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeConfig {
    /// Contact for the CA (expiry notices).
    pub email: String,
    /// The names the certificate covers; each must reach this Portier on port 80.
    pub domains: Vec<String>,
    /// The CA's directory URL (default: Let's Encrypt).
    #[serde(default = "letsencrypt")]
    pub directory: String,
    /// Where the account, certificate and key are kept (restarts reuse them).
    #[serde(default = "acme_storage")]
    pub storage: std::path::PathBuf,
    /// PEM of the CA that serves the directory over HTTPS, when it is not publicly trusted
    /// (a test CA such as Pebble).
    #[serde(default)]
    pub directory_ca: Option<std::path::PathBuf>,
    /// Renew when the certificate has less than this left.
    #[serde(default = "thirty_days")]
    pub renew_before: HumanDuration,
}

fn letsencrypt() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".into()
}
fn acme_storage() -> std::path::PathBuf {
    "acme".into()
}
fn thirty_days() -> HumanDuration {
    HumanDuration::from_secs(30 * 86_400)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFiles {
    /// Certificate chain (leaf first).
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A content coding Portier can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Coding {
    Zstd,
    Br,
    Gzip,
}

impl Coding {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// How responses are compressed (which codings, per route: `compress`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CompressionConfig {
    /// Bodies smaller than this (by `Content-Length`) are sent as they are.
    pub min_size: ByteSize,
    /// Levels for responses compressed as they pass (chosen by benches/ compress-bench).
    pub gzip_level: u32,
    pub br_level: u32,
    pub zstd_level: u32,
    /// Memory kept for compression dictionaries (routes' `dictionary`), least recently used
    /// out first.
    pub dictionaries_max_size: ByteSize,
    /// A larger response is not kept as a dictionary.
    pub dictionary_max_size: ByteSize,
    /// Compress each stored text response again, in the background, at its coding's strongest
    /// level, and keep the smaller copy (see `cache/recompress.rs`).
    pub recompress: bool,
    /// Larger bodies keep their first compression.
    pub recompress_max_size: ByteSize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            min_size: ByteSize(1024),
            gzip_level: 6,
            br_level: 5,
            zstd_level: 3,
            dictionaries_max_size: ByteSize(32 << 20),
            dictionary_max_size: ByteSize(4 << 20),
            recompress: true,
            recompress_max_size: ByteSize(2 << 20),
        }
    }
}

//! Telemetry: metrics, Portier's own event log (and, as they land, traces, access logs, profiles).

pub mod access_log;
pub mod events;
pub mod method;
pub mod metrics;
pub mod names;
pub mod profiling;

pub mod time;
pub mod traces;

use crate::cache::status::CacheStatus;
use crate::config::Telemetry;

/// One finished client request, built once at the end; the metrics, the access log and the
/// span all read this.
pub(crate) struct RequestSummary<'a> {
    /// As sent (the access log keeps it, escaped).
    pub(crate) method: &'a str,
    /// Bounded: `_OTHER` for unknown methods (metrics, span).
    pub(crate) method_label: &'a str,
    pub(crate) span_name: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    /// `1.0`, `1.1` or `2`: the client's HTTP version (`network.protocol.version`).
    pub(crate) protocol: &'static str,
    /// `http` or `https`: the client connection's (`url.scheme`).
    pub(crate) scheme: &'static str,
    /// The matched route's pattern (`/api/*`), empty when none matched.
    pub(crate) route: &'a str,
    pub(crate) pool: &'a str,
    pub(crate) status: u16,
    pub(crate) cache_status: CacheStatus,
    pub(crate) duration_ms: f64,
    pub(crate) origin_ms: Option<f64>,
    pub(crate) bytes: u64,
    /// The response's `Content-Encoding` (empty for identity).
    pub(crate) encoding: &'a str,
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) request_id: &'a str,
    pub(crate) trace_id: Option<&'a str>,
    /// The response went into the cache, whole: a fill cut off mid-way is not stored even
    /// though its `Cache-Status` (sent before the body) announced `stored`.
    pub(crate) stored: bool,
}

/// Telemetry settings after environment fallbacks (config wins when both are set).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub service_name: String,
    pub traces: Option<traces::TraceSettings>,
    pub pyroscope_url: Option<String>,
}

/// The `network.protocol.version` of a request's HTTP version.
pub(crate) fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

pub fn resolve(cfg: &Telemetry, env: impl Fn(&str) -> Option<String>) -> Resolved {
    let nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let service_name = cfg.service_name.clone().or_else(|| nonempty("OTEL_SERVICE_NAME")).unwrap_or_else(|| "proxy".into());
    let endpoint = cfg.traces.endpoint.clone().or_else(|| nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let ratio = cfg.traces.sample_ratio.unwrap_or_else(|| {
        traces::ratio_from_env(nonempty("OTEL_TRACES_SAMPLER").as_deref(), nonempty("OTEL_TRACES_SAMPLER_ARG").as_deref())
    });
    Resolved {
        traces: endpoint.map(|endpoint| traces::TraceSettings {
            endpoint,
            service_name: service_name.clone(),
            ratio,
            queue_size: cfg.traces.queue_size.unwrap_or(2048).max(1),
        }),
        pyroscope_url: cfg.profiling.pyroscope_url.clone().or_else(|| nonempty("PYROSCOPE_SERVER_ADDRESS")),
        service_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_fills_what_config_leaves_out() {
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
            "OTEL_SERVICE_NAME" => Some("edge".to_string()),
            "OTEL_TRACES_SAMPLER" => Some("parentbased_traceidratio".to_string()),
            "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".to_string()),
            _ => None,
        };
        let r = resolve(&Telemetry::default(), env);
        assert_eq!(r.service_name, "edge");
        let t = r.traces.unwrap();
        assert_eq!((t.endpoint.as_str(), t.ratio), ("http://collector:4318", 0.25));
        let none = resolve(&Telemetry::default(), |_| None);
        assert_eq!(none.service_name, "proxy");
        assert!(none.traces.is_none() && none.pyroscope_url.is_none());
    }
}

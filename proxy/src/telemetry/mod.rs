//! Telemetry: metrics, Portier's own event log (and, as they land, traces, access logs, profiles).

pub(crate) mod access_log;
pub(crate) mod events;
pub(crate) mod library_log;
pub(crate) mod method;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod profiling;

pub(crate) mod time;
pub(crate) mod traces;

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
    /// `1.0`, `1.1`, `2` or `3`: the client's HTTP version (`network.protocol.version`).
    pub(crate) protocol: &'static str,
    /// `http` or `https`: the client connection's (`url.scheme`).
    pub(crate) scheme: &'static str,
    /// The matched route's pattern (`/api/*`), empty when none matched.
    pub(crate) route: &'a str,
    pub(crate) pool: &'a str,
    pub(crate) status: u16,
    pub(crate) cache_status: CacheLabel,
    pub(crate) duration_ms: f64,
    pub(crate) origin_ms: Option<f64>,
    pub(crate) bytes: u64,
    /// The response's `Content-Encoding` (empty for identity).
    pub(crate) encoding: &'a str,
    /// The response's `Content-Type`, as a bounded class (a metric label).
    pub(crate) content_type: ContentClass,
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) request_id: &'a str,
    pub(crate) trace_id: Option<&'a str>,
    /// The response went into the cache, whole: a fill cut off mid-way is not stored even
    /// though its `Cache-Status` (sent before the body) announced `stored`.
    pub(crate) stored: bool,
}

/// A request's cache status as telemetry records it (the `X-Cache` value), and whether it
/// was answered from the store: the cache decides it, telemetry only writes it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheLabel {
    pub(crate) name: &'static str,
    pub(crate) from_store: bool,
}

/// A response's media type as a metric label: a few families, never the raw header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ContentClass {
    Html,
    Css,
    JavaScript,
    Json,
    Text,
    Image,
    Font,
    Other,
    None,
}

impl ContentClass {
    /// From a `Content-Type` value (`text/html; charset=utf-8`), by its essence.
    pub(crate) fn of(value: Option<&[u8]>) -> ContentClass {
        let Some(v) = value else { return ContentClass::None };
        let essence = v.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
        let is = |t: &str| essence.eq_ignore_ascii_case(t.as_bytes());
        let starts = |p: &str| essence.len() >= p.len() && essence[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        let ends = |p: &str| essence.len() >= p.len() && essence[essence.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes());
        if is("text/html") || is("application/xhtml+xml") {
            ContentClass::Html
        } else if is("text/css") {
            ContentClass::Css
        } else if is("text/javascript") || is("application/javascript") || is("application/x-javascript") || is("application/wasm") {
            ContentClass::JavaScript
        } else if is("application/json") || ends("+json") || is("application/x-ndjson") {
            ContentClass::Json
        } else if starts("image/") {
            ContentClass::Image
        } else if starts("font/") || is("application/font-woff") {
            ContentClass::Font
        } else if starts("text/") || is("application/xml") || ends("+xml") {
            ContentClass::Text
        } else {
            ContentClass::Other
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ContentClass::Html => "html",
            ContentClass::Css => "css",
            ContentClass::JavaScript => "javascript",
            ContentClass::Json => "json",
            ContentClass::Text => "text",
            ContentClass::Image => "image",
            ContentClass::Font => "font",
            ContentClass::Other => "other",
            ContentClass::None => "none",
        }
    }
}

/// Telemetry settings after environment fallbacks (config wins when both are set).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
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

pub(crate) fn resolve(cfg: &Telemetry, env: impl Fn(&str) -> Option<String>) -> Resolved {
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
    fn content_types_fall_into_few_classes() {
        let of = |v: &str| ContentClass::of(Some(v.as_bytes())).as_str();
        assert_eq!(of("text/html; charset=utf-8"), "html");
        assert_eq!(of("TEXT/CSS"), "css");
        assert_eq!(of("text/javascript;charset=UTF-8"), "javascript");
        assert_eq!(of("application/problem+json"), "json");
        assert_eq!(of("image/avif"), "image");
        assert_eq!(of("font/woff2"), "font");
        assert_eq!(of("image/svg+xml"), "image");
        assert_eq!(of("text/plain"), "text");
        assert_eq!(of("application/octet-stream"), "other");
        assert_eq!(of("\u{1}garbage"), "other");
        assert_eq!(ContentClass::of(None).as_str(), "none");
    }

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

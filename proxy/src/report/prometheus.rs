//! Portier's counters over a run read from the user's Prometheus (`--prometheus URL`), as
//! the same totals `portier report mark` samples, and the hit ratio over the run
//! (`query_range`). Only Portier exports the `cache_*` series; the span metrics are selected by
//! `service_name` (the API's come through the Collector under another).

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PromError {
    #[error("--prometheus {0:?}: give http://host:port")]
    Url(String),
    #[error("asking Prometheus at {addr} ({query}): {what}")]
    Query { addr: String, query: String, what: String },
}

/// Counter totals keyed as `/metrics/totals` keys them.
type Totals = BTreeMap<String, f64>;

pub(crate) struct Prometheus {
    authority: String,
    service: String,
    /// A run's end is read one scrape later: the value at a time is the last sample before
    /// it, which may predate the run's last requests.
    scrape_interval_ms: u64,
}

/// Query strings percent-encoded: PromQL is full of braces, quotes and spaces.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    pub(crate) fn new(url: &str, service: &str, scrape_interval: Duration) -> Result<Prometheus, PromError> {
        let authority = url.strip_prefix("http://").map(|r| r.trim_end_matches('/')).filter(|a| !a.is_empty() && !a.contains('/'));
        let Some(authority) = authority else { return Err(PromError::Url(url.to_string())) };
        let scrape_interval_ms = u64::try_from(scrape_interval.as_millis()).unwrap_or(u64::MAX);
        Ok(Prometheus { authority: authority.to_string(), service: service.to_string(), scrape_interval_ms })
    }

    /// The counters at a run's start and end (the end one scrape later).
    pub(crate) fn window(&self, start_ms: u64, end_ms: u64) -> Result<(Totals, Totals), PromError> {
        Ok((self.totals_at(start_ms)?, self.totals_at(end_ms.saturating_add(self.scrape_interval_ms))?))
    }

    fn get(&self, target: &str, query: &str) -> Result<serde_json::Value, PromError> {
        let fail = |what: String| PromError::Query { addr: self.authority.clone(), query: query.to_string(), what };
        let req = crate::http_client::Request { method: "GET", target, host: &self.authority, headers: &[], body: b"" };
        let head = crate::http_client::send_blocking(&self.authority, &req, Duration::from_secs(10)).map_err(|e| fail(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_slice(&head.body).map_err(|e| fail(format!("status {}: {e}", head.status)))?;
        if v["status"] != "success" {
            return Err(fail(v["error"].as_str().unwrap_or("not a success").to_string()));
        }
        Ok(v["data"]["result"].clone())
    }

    /// The totals at `t_ms`, keyed as `/metrics/totals` keys them.
    fn totals_at(&self, t_ms: u64) -> Result<Totals, PromError> {
        let svc = &self.service;
        let queries: [(String, &str, &[&str]); 9] = [
            // Every process exports this; Portier's are the targets that also export its build
            // info. Whole seconds (the marks read it to the microsecond).
            ("sum(process_cpu_seconds_total and on(job, instance) portier_build_info)".into(), "process_cpu_seconds_total", &[]),
            ("sum by (cache_status) (cache_requests_total)".into(), "cache_requests_total", &["cache_status"]),
            ("sum(compression_recompress_saved_bytes_total)".into(), "compression_recompress_saved_bytes_total", &[]),
            ("sum(cache_hit_total)".into(), "cache_hit_total", &[]),
            (
                format!("sum by (http_status_code) (traces_spanmetrics_calls_total{{service_name=\"{svc}\"}})"),
                "traces_spanmetrics_calls_total",
                &["http_status_code"],
            ),
            ("sum by (source) (cache_served_bytes_total)".into(), "cache_served_bytes_total", &["source"]),
            ("sum by (encoding, stage) (compression_bytes_total)".into(), "compression_bytes_total", &["encoding", "stage"]),
            ("sum(upstream_request_duration_milliseconds_sum)".into(), "upstream_request_duration_milliseconds_sum", &[]),
            ("sum(upstream_request_duration_milliseconds_count)".into(), "upstream_request_duration_milliseconds_count", &[]),
        ];
        let time = format!("{}.{:03}", t_ms / 1000, t_ms % 1000);
        let mut out = BTreeMap::new();
        for (q, name, labels) in queries {
            for series in self.get(&format!("/api/v1/query?query={}&time={time}", encode(&q)), &q)?.as_array().into_iter().flatten() {
                let value = series["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                let selected: Vec<String> =
                    labels.iter().map(|l| format!("{l}=\"{}\"", series["metric"][*l].as_str().unwrap_or(""))).collect();
                let key = if selected.is_empty() { name.to_string() } else { format!("{name}{{{}}}", selected.join(",")) };
                out.insert(key, value);
            }
        }
        Ok(out)
    }

    /// The hit ratio over the window: (seconds from `start_ms`, ratio), about 200 points.
    pub(crate) fn hit_ratio(&self, start_ms: u64, end_ms: u64) -> Result<Vec<(u64, f64)>, PromError> {
        let span = end_ms.saturating_sub(start_ms) / 1000;
        let step = (span / 200).max(1);
        // The rate window spans a few scrapes whatever the step; a step without requests has
        // no ratio (`> 0` drops it) rather than a 0% that reads as a cold cache.
        let window = (step * 4).max(5);
        let q = format!(
            "sum(rate(cache_hit_total[{window}s])) / (sum(rate(traces_spanmetrics_calls_total{{service_name=\"{}\"}}[{window}s])) > 0)",
            self.service
        );
        let target =
            format!("/api/v1/query_range?query={}&start={}&end={}&step={step}", encode(&q), start_ms / 1000, end_ms.div_ceil(1000));
        let result = self.get(&target, &q)?;
        let points = result.get(0).and_then(|s| s["values"].as_array()).cloned().unwrap_or_default();
        Ok(points
            .iter()
            .filter_map(|p| {
                let t = p[0].as_f64()? as u64;
                let v = p[1].as_str()?.parse::<f64>().ok().filter(|v| v.is_finite())?;
                Some((t.saturating_sub(start_ms / 1000), v.clamp(0.0, 1.0)))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_queries() {
        let s = Duration::from_secs(15);
        assert!(Prometheus::new("http://127.0.0.1:9090", "proxy", s).is_ok());
        assert!(Prometheus::new("http://127.0.0.1:9090/", "proxy", s).is_ok());
        for bad in ["127.0.0.1:9090", "https://p:9090", "http://", "http://p:9090/api"] {
            assert!(Prometheus::new(bad, "proxy", s).is_err(), "{bad}");
        }
        assert_eq!(encode("sum(x{a=\"b\"})"), "sum%28x%7Ba%3D%22b%22%7D%29");
    }
}

//! `portier report`: the runbook's before/after eco-design report from the files its runs
//! leave (k6 summaries and points, Lighthouse reports) and Portier's own counters over each
//! run (`portier report mark DIR start|end` samples the admin listener's `/metrics/totals`).
//! One self-contained HTML page (inline SVG, prints to PDF), the same tables in Markdown, and
//! JSON for scripts. The energy estimate is the Sustainable Web Design model v4 ([`energy`]).

mod energy;
mod inputs;
mod prometheus;
mod render;

use inputs::{K6Summary, Lighthouse, Mark};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    #[error("--run {0:?}: give NAME=DIR, e.g. baseline=results/baseline")]
    RunSpec(String),
    #[error("give at least one --run (the first is the baseline)")]
    NoRun,
    /// A bad `--grid-intensity` or `--swd-constants`, named in the message.
    #[error("{0}")]
    Grid(String),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("asking {admin} for /metrics/totals: {what}")]
    Admin { admin: String, what: String },
    #[error(transparent)]
    Prometheus(#[from] prometheus::PromError),
    #[error("Portier's counters, {0}")]
    Counters(String),
    #[error("{0}: --prometheus needs the run's time window: portier-start.json and portier-end.json, or k6 points (*metrics*.json)")]
    NoWindow(PathBuf),
}

/// Where Portier's counters come from: the marks in each run's directory, or Prometheus.
pub(crate) struct Sources<'a> {
    pub prometheus: Option<&'a str>,
    pub service_name: &'a str,
    pub scrape_interval: std::time::Duration,
    /// Six kWh/GB figures replacing the model's (`--swd-constants`).
    pub swd_constants: Option<&'a str>,
}

/// What the cache and compression did over one run, from the two marks' difference.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CacheWork {
    pub window_s: f64,
    pub requests: f64,
    pub hits: f64,
    pub hit_ratio: f64,
    pub not_modified: f64,
    pub share_304: f64,
    pub origin_requests: f64,
    /// `None` without an origin request.
    pub origin_ms_avg: Option<f64>,
    /// Hits × the baseline's mean origin time (this run's when the baseline has none): what
    /// the origin would have spent answering them, to the response header.
    pub origin_time_avoided_s: Option<f64>,
    /// `None` when the cache was off (these are only counted through it).
    pub bytes_from_cache: Option<f64>,
    pub bytes_from_origin: Option<f64>,
    /// Compressed on the way into the cache, per coding.
    pub compression: Vec<CodingWork>,
    /// Bytes the background re-compression took off stored copies.
    pub recompress_saved: f64,
    /// Portier's own CPU time (user + system, all threads) per client request, µs.
    pub cpu_us_per_request: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CodingWork {
    pub encoding: String,
    pub bytes_in: f64,
    pub bytes_out: f64,
    /// out / in.
    pub ratio: f64,
}

/// The counters' differences; a counter that went down (Portier restarted, marks swapped, a
/// replica gone from Prometheus) makes every figure wrong and is refused.
fn cache_work(start: &Mark, end: &Mark, what: &str) -> Result<CacheWork, ReportError> {
    if end.time_ms < start.time_ms {
        return Err(ReportError::Counters(format!("{what}: the end ({}) is before the start ({})", end.time_ms, start.time_ms)));
    }
    if let Some(k) = start.totals.iter().find(|(k, v)| end.totals.get(*k).copied().unwrap_or(0.0) < **v).map(|(k, _)| k) {
        return Err(ReportError::Counters(format!("{what}: {k} went down between start and end (a restart during the run?)")));
    }
    let delta = |key: &str| end.totals.get(key).copied().unwrap_or(0.0) - start.totals.get(key).copied().unwrap_or(0.0);
    let sum_where = |prefix: &str, want: &dyn Fn(&str) -> bool| -> f64 {
        // From +0.0: an empty f64 sum is -0.0.
        end.totals.keys().filter(|k| k.starts_with(prefix) && want(k)).map(|k| delta(k)).fold(0.0, |a, b| a + b)
    };
    // Every client request is a server span, whether the cache is on or off.
    let calls = sum_where("traces_spanmetrics_calls_total", &|_| true);
    let requests = calls;
    let hits = delta("cache_hit_total");
    let not_modified = sum_where("traces_spanmetrics_calls_total", &|k| k.contains("\"304\""));
    let origin_requests = delta("upstream_request_duration_milliseconds_count");
    let origin_ms = delta("upstream_request_duration_milliseconds_sum");
    let origin_ms_avg = (origin_requests > 0.0).then(|| origin_ms / origin_requests);
    let through_cache = sum_where("cache_requests_total{", &|_| true) > 0.0;
    let mut codings: Vec<String> = end
        .totals
        .keys()
        .filter_map(|k| k.strip_prefix("compression_bytes_total{encoding=\""))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    codings.dedup();
    let compression = codings
        .into_iter()
        .map(|c| {
            let bytes_in = delta(&format!("compression_bytes_total{{encoding=\"{c}\",stage=\"in\"}}"));
            let bytes_out = delta(&format!("compression_bytes_total{{encoding=\"{c}\",stage=\"out\"}}"));
            CodingWork { ratio: if bytes_in > 0.0 { bytes_out / bytes_in } else { 0.0 }, encoding: c, bytes_in, bytes_out }
        })
        .filter(|c| c.bytes_in > 0.0)
        .collect();
    Ok(CacheWork {
        window_s: (end.time_ms - start.time_ms) as f64 / 1000.0,
        requests,
        hits,
        hit_ratio: if requests > 0.0 { hits / requests } else { 0.0 },
        not_modified,
        share_304: if calls > 0.0 { not_modified / calls } else { 0.0 },
        origin_requests,
        origin_ms_avg,
        origin_time_avoided_s: None,
        bytes_from_cache: through_cache.then(|| delta("cache_served_bytes_total{source=\"cache\"}")),
        bytes_from_origin: through_cache.then(|| delta("cache_served_bytes_total{source=\"origin\"}")),
        compression,
        recompress_saved: sum_where("compression_recompress_saved_bytes_total", &|_| true),
        cpu_us_per_request: (requests > 0.0 && end.totals.contains_key("process_cpu_seconds_total"))
            .then(|| delta("process_cpu_seconds_total") * 1e6 / requests),
    })
}

/// One run, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    pub name: String,
    pub dir: String,
    pub files: Vec<String>,
    pub k6: K6Summary,
    /// From k6's points when given (exact), else its summary.
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Only k6's points carry the status of each request.
    pub rate_5xx: Option<f64>,
    pub lighthouse: Vec<Lighthouse>,
    /// The CPU profile given with the run (`*.pb.gz`), its widest functions.
    pub hot_path: Option<inputs::HotPath>,
    pub cache: Option<CacheWork>,
    /// Bytes k6 received over the run, through the model.
    pub transfer: energy::Estimate,
    /// The first Lighthouse page's weight, through the model, and its rating.
    pub per_view: Option<(energy::Estimate, &'static str)>,
    /// Bytes served from the cache, at most the data-centre share.
    pub origin_avoided: Option<energy::Estimate>,
    /// (second, requests, p95 ms, p99 ms)
    pub per_second: Vec<(u64, usize, f64, f64)>,
    /// `marks` or `prometheus`: where `cache` comes from.
    pub counters_from: Option<&'static str>,
    /// (second, hit ratio), from Prometheus.
    pub hit_ratio: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub title: String,
    pub generated: String,
    pub grid_intensity: f64,
    pub model: Model,
    pub runs: Vec<Run>,
}

/// The constants used, written into the report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Model {
    pub name: &'static str,
    /// Whether they are the model's own (`--swd-constants` not given).
    pub default_constants: bool,
    #[serde(flatten)]
    pub constants: energy::Constants,
    pub gb: &'static str,
}

fn run(name: &str, dir: &Path, model: &energy::Constants, prom: Option<&prometheus::Prometheus>) -> Result<Run, ReportError> {
    let f = inputs::read_run(dir)?;
    let (cache, counters_from, hit_ratio) = match prom {
        Some(p) => {
            let window =
                f.marks.as_ref().map(|(s, e)| (s.time_ms, e.time_ms)).or_else(|| f.points.as_ref().map(|p| (p.start_ms, p.end_ms)));
            let (start, end) = window.ok_or_else(|| ReportError::NoWindow(dir.into()))?;
            let (s, e) = p.window(start, end)?;
            let (s, e) = (Mark { time_ms: start, totals: s }, Mark { time_ms: end, totals: e });
            let mut work = cache_work(&s, &e, &format!("{} (Prometheus)", dir.display()))?;
            // Prometheus holds the process collector's whole seconds: under 10 s of CPU the
            // figure would be more rounding than measurement (the marks read microseconds).
            if work.cpu_us_per_request.is_some_and(|us| us * work.requests / 1e6 < 10.0) {
                work.cpu_us_per_request = None;
            }
            (Some(work), Some("prometheus"), p.hit_ratio(start, end)?)
        }
        None => {
            let what = dir.join("portier-start.json, portier-end.json").display().to_string();
            (f.marks.as_ref().map(|(s, e)| cache_work(s, e, &what)).transpose()?, f.marks.as_ref().map(|_| "marks"), Vec::new())
        }
    };
    // The first Lighthouse report only, for every row (scores, weight, rating alike).
    let per_view = f.lighthouse.first().and_then(|l| l.total_byte_weight).map(|b| {
        let e = model.transfer(b);
        (e, energy::rating(e.g_co2e))
    });
    Ok(Run {
        name: name.to_string(),
        dir: dir.display().to_string(),
        files: f.files,
        p95_ms: f.points.as_ref().map(|p| p.p95_ms).or(f.summary.p95_ms),
        p99_ms: f.points.as_ref().map(|p| p.p99_ms).or(f.summary.p99_ms),
        rate_5xx: f.points.as_ref().and_then(|p| p.rate_5xx),
        transfer: model.transfer(f.summary.data_received),
        origin_avoided: cache.as_ref().and_then(|c| c.bytes_from_cache).map(|b| model.data_centre_only(b)),
        per_second: f.points.map(|p| p.per_second).unwrap_or_default(),
        counters_from,
        hit_ratio,
        k6: f.summary,
        lighthouse: f.lighthouse,
        hot_path: f.hot_path,
        cache,
        per_view,
    })
}

pub(crate) fn build(runs: &[String], out: &Path, grid: &str, title: &str, sources: &Sources<'_>) -> Result<Vec<PathBuf>, ReportError> {
    let intensity = energy::intensity(grid).map_err(ReportError::Grid)?;
    let constants = match sources.swd_constants {
        Some(spec) => energy::Constants::new(intensity).with_segments(spec).map_err(ReportError::Grid)?,
        None => energy::Constants::new(intensity),
    };
    if runs.is_empty() {
        return Err(ReportError::NoRun);
    }
    let prom = sources.prometheus.map(|url| prometheus::Prometheus::new(url, sources.service_name, sources.scrape_interval)).transpose()?;
    let mut built = Vec::new();
    for spec in runs {
        let (name, dir) =
            spec.split_once('=').filter(|(n, d)| !n.is_empty() && !d.is_empty()).ok_or_else(|| ReportError::RunSpec(spec.clone()))?;
        built.push(run(name, Path::new(dir), &constants, prom.as_ref())?);
    }
    // What the hits would have cost the origin: the baseline's mean origin time (with the
    // cache on, a run's own misses are few and colder).
    let baseline_ms = built.first().and_then(|r| r.cache.as_ref()).and_then(|c| c.origin_ms_avg);
    for r in &mut built {
        if let Some(c) = r.cache.as_mut() {
            c.origin_time_avoided_s = baseline_ms.or(c.origin_ms_avg).map(|ms| c.hits * ms / 1000.0);
        }
    }
    let report = Report {
        title: title.to_string(),
        generated: crate::telemetry::time::rfc3339_now(),
        grid_intensity: intensity,
        model: Model {
            name: "Sustainable Web Design model v4 (as CO2.js implements it)",
            default_constants: sources.swd_constants.is_none(),
            constants,
            gb: "10^9 bytes",
        },
        runs: built,
    };
    std::fs::create_dir_all(out).map_err(|source| ReportError::Write { path: out.into(), source })?;
    let files = [
        ("report.html", render::html(&report)),
        ("report.md", render::markdown(&report)),
        ("report.json", serde_json::to_string_pretty(&report).unwrap_or_default()),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| ReportError::Write { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// Samples the admin listener's counters into `dir/portier-{which}.json`.
pub(crate) fn mark(dir: &Path, which: &str, admin: &str) -> Result<PathBuf, ReportError> {
    let fail = |what: String| ReportError::Admin { admin: admin.to_string(), what };
    let req = crate::http_client::Request { method: "GET", target: "/metrics/totals", host: admin, headers: &[], body: b"" };
    let head = crate::http_client::send_blocking(admin, &req, std::time::Duration::from_secs(5)).map_err(|e| fail(e.to_string()))?;
    if head.status != 200 {
        return Err(fail(format!("status {}", head.status)));
    }
    let v: serde_json::Value = serde_json::from_slice(&head.body).map_err(|e| fail(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write { path: dir.into(), source })?;
    let path = dir.join(format!("portier-{which}.json"));
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    std::fs::write(&path, text).map_err(|source| ReportError::Write { path: path.clone(), source })?;
    Ok(path)
}

//! What a run directory holds, read as the runbook's tools write it: k6's `--summary-export`
//! (`*summary*.json`), k6's `--out json` points (`*metrics*.json`, one JSON object a line),
//! Lighthouse's `--output json` (`lighthouse*.json`) and Portier's marks
//! (`portier-start.json`, `portier-end.json`, written by `portier report mark`).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not JSON ({source})")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {what}")]
    Shape { path: PathBuf, what: String },
    #[error("{0}: no k6 summary (*summary*.json, from `k6 run --summary-export=...`)")]
    NoSummary(PathBuf),
}

fn read_json(path: &Path) -> Result<Value, InputError> {
    let text = std::fs::read(path).map_err(|source| InputError::Read { path: path.into(), source })?;
    serde_json::from_slice(&text).map_err(|source| InputError::Json { path: path.into(), source })
}

/// k6's end-of-test summary.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct K6Summary {
    pub requests: f64,
    pub rps: f64,
    pub avg_ms: f64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// `http_req_failed`'s rate (k6 counts statuses outside 200–399 and network errors).
    pub failed_rate: f64,
    pub data_received: f64,
    pub data_sent: f64,
}

fn summary(path: &Path) -> Result<K6Summary, InputError> {
    let v = read_json(path)?;
    let m = &v["metrics"];
    let shape = |what: &str| InputError::Shape { path: path.into(), what: what.to_string() };
    if !m.is_object() {
        return Err(shape("no \"metrics\" object: is this k6's --summary-export file?"));
    }
    let num = |metric: &str, field: &str| m[metric][field].as_f64();
    Ok(K6Summary {
        requests: num("http_reqs", "count").ok_or_else(|| shape("metrics.http_reqs.count is missing"))?,
        rps: num("http_reqs", "rate").unwrap_or(0.0),
        avg_ms: num("http_req_duration", "avg").unwrap_or(0.0),
        p95_ms: num("http_req_duration", "p(95)"),
        p99_ms: num("http_req_duration", "p(99)"),
        // Older exports give passes/fails with `value` the rate; newer ones `rate` too.
        failed_rate: num("http_req_failed", "value").or_else(|| num("http_req_failed", "rate")).unwrap_or(0.0),
        data_received: num("data_received", "count").unwrap_or(0.0),
        data_sent: num("data_sent", "count").unwrap_or(0.0),
    })
}

/// From k6's points: percentiles over every request (as k6 computes them), the 5xx rate, and
/// per-second series.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct K6Points {
    pub requests: usize,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// `None` when no point carried a `status` tag (k6 run with other `--system-tags`).
    pub rate_5xx: Option<f64>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// (second from the start, requests, p95 ms, p99 ms); a second without a completed
    /// request has 0 requests and no percentiles (NaN, null in JSON).
    pub per_second: Vec<(u64, usize, f64, f64)>,
}

/// k6's own percentile (its TrendSink): linear between the two values around `p·(n−1)`.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else { return 0.0 };
    let at = p / 100.0 * last as f64;
    let (lo, hi) = (at.floor() as usize, (at.ceil() as usize).min(last));
    sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
}

fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn points(path: &Path) -> Result<K6Points, InputError> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|source| InputError::Read { path: path.into(), source })?;
    // A line at a time: a long run's file is gigabytes.
    let mut lines = std::io::BufReader::new(file).split(b'\n').enumerate().peekable();
    let mut durations: Vec<(u64, f64)> = Vec::new();
    let (mut tagged, mut errors_5xx) = (0usize, 0usize);
    while let Some((i, line)) = lines.next() {
        let line = line.map_err(|source| InputError::Read { path: path.into(), source })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            // k6 stopped mid-write: the last line may be cut; anything else is refused.
            Err(_) if lines.peek().is_none() => break,
            Err(e) => return Err(InputError::Shape { path: path.into(), what: format!("line {}: {e}", i + 1) }),
        };
        if v["type"] != "Point" {
            continue;
        }
        let d = &v["data"];
        match v["metric"].as_str() {
            Some("http_req_duration") => {
                if let (Some(t), Some(ms)) = (d["time"].as_str().and_then(rfc3339_ms), d["value"].as_f64()) {
                    durations.push((t, ms));
                }
            }
            Some("http_reqs") => {
                if let Some(status) = d["tags"]["status"].as_str() {
                    tagged += 1;
                    errors_5xx += usize::from(status.starts_with('5'));
                }
            }
            _ => {}
        }
    }
    if durations.is_empty() {
        return Err(InputError::Shape { path: path.into(), what: "no http_req_duration points (k6 run --out json=...)".into() });
    }
    durations.sort_by_key(|(t, _)| *t);
    let start = durations.first().map_or(0, |d| d.0);
    let end = durations.last().map_or(0, |d| d.0);
    // A second per row of the charts: a stray point days away would make millions of them.
    if end - start > 7 * 86_400_000 {
        return Err(InputError::Shape { path: path.into(), what: "its points span more than 7 days: not one run".into() });
    }
    let mut by_second: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (t, ms) in &durations {
        by_second.entry((t - start) / 1000).or_default().push(*ms);
    }
    let per_second = (0..=(end - start) / 1000)
        .map(|s| match by_second.get_mut(&s) {
            Some(v) => {
                v.sort_by(f64::total_cmp);
                (s, v.len(), percentile(v, 95.0), percentile(v, 99.0))
            }
            None => (s, 0, f64::NAN, f64::NAN),
        })
        .collect();
    let mut all: Vec<f64> = durations.iter().map(|d| d.1).collect();
    all.sort_by(f64::total_cmp);
    Ok(K6Points {
        requests: durations.len(),
        p95_ms: percentile(&all, 95.0),
        p99_ms: percentile(&all, 99.0),
        rate_5xx: (tagged > 0).then(|| errors_5xx as f64 / tagged as f64),
        start_ms: start,
        end_ms: end,
        per_second,
    })
}

/// One Lighthouse report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Lighthouse {
    pub url: String,
    /// Category scores, 0–100.
    pub scores: BTreeMap<String, f64>,
    pub total_byte_weight: Option<f64>,
    pub requests: Option<usize>,
}

fn lighthouse(path: &Path) -> Result<Lighthouse, InputError> {
    let v = read_json(path)?;
    let url = v["finalDisplayedUrl"].as_str().or_else(|| v["finalUrl"].as_str()).or_else(|| v["requestedUrl"].as_str());
    let Some(url) = url else {
        return Err(InputError::Shape {
            path: path.into(),
            what: "no finalDisplayedUrl/requestedUrl: is this Lighthouse's --output json?".into(),
        });
    };
    let mut scores = BTreeMap::new();
    if let Some(cats) = v["categories"].as_object() {
        for (id, c) in cats {
            if let Some(s) = c["score"].as_f64() {
                scores.insert(id.clone(), (s * 100.0).round());
            }
        }
    }
    Ok(Lighthouse {
        url: url.to_string(),
        scores,
        total_byte_weight: v["audits"]["total-byte-weight"]["numericValue"].as_f64(),
        requests: v["audits"]["network-requests"]["details"]["items"].as_array().map(Vec::len),
    })
}

/// A `portier report mark` file: the admin listener's `/metrics/totals`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mark {
    pub time_ms: u64,
    pub totals: BTreeMap<String, f64>,
}

fn mark(path: &Path) -> Result<Mark, InputError> {
    let v = read_json(path)?;
    let shape = |what: &str| InputError::Shape { path: path.into(), what: what.to_string() };
    let time_ms = v["time_ms"].as_u64().ok_or_else(|| shape("no time_ms: written by `portier report mark`?"))?;
    let totals = v["totals"].as_object().ok_or_else(|| shape("no totals object"))?;
    Ok(Mark { time_ms, totals: totals.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect() })
}

/// A CPU profile's widest functions by their own samples (what a flame graph shows widest at
/// its top), for the runbook's "hotpath CPU" row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HotPath {
    pub samples: f64,
    /// (function, share of all samples), widest first.
    pub top: Vec<(String, f64)>,
}

/// A pprof protobuf, gzipped or not (Portier's `/debug/pprof/profile`, Pyroscope's and
/// `go tool pprof`'s exports): each sample's leaf function (the innermost inlined one).
fn profile(path: &Path) -> Result<HotPath, InputError> {
    use pprof::protos::Message as _;
    use std::io::Read as _;
    // A real profile is a few MiB; a crafted one could decode into many times its size.
    const MAX: u64 = 64 << 20;
    let shape = |what: String| InputError::Shape { path: path.into(), what };
    let file = std::fs::File::open(path).map_err(|source| InputError::Read { path: path.into(), source })?;
    let mut raw = Vec::new();
    file.take(MAX + 1).read_to_end(&mut raw).map_err(|source| InputError::Read { path: path.into(), source })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).take(MAX + 1).read_to_end(&mut out).map_err(|e| shape(format!("not gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX {
        return Err(shape(format!("larger than {} MiB: not a CPU profile of one run", MAX >> 20)));
    }
    // Each element decodes into tens of bytes from two: bound the decoded size too.
    if bytes.iter().filter(|b| **b == 0x12 || **b == 0x22).count() > 4_000_000 {
        return Err(shape("more samples or locations than one run's profile holds".into()));
    }
    let p = pprof::protos::Profile::decode(bytes.as_slice()).map_err(|e| shape(format!("not a pprof profile: {e}")))?;
    let text = |i: i64| usize::try_from(i).ok().and_then(|i| p.string_table.get(i)).map(String::as_str).unwrap_or("?");
    // CPU time where the profile has it, else its first value (sample counts).
    let column = p.sample_type.iter().position(|t| text(t.ty) == "cpu").unwrap_or(0);
    let functions: std::collections::HashMap<u64, &str> = p.function.iter().map(|f| (f.id, text(f.name))).collect();
    let leaf: std::collections::HashMap<u64, &str> = p
        .location
        .iter()
        .filter_map(|l| Some((l.id, l.line.first().and_then(|line| functions.get(&line.function_id).copied())?)))
        .collect();
    // A sampling profiler's own frames (the signal handler unwinding the stack) sit above the
    // code it sampled in some profiles (pprof-rs's): they are not where the time went.
    let profiler =
        |f: &str| ["libunwind", "backtrace::", "pprof::", "perf_signal_handler", "__restore_rt", "_Unwind_"].iter().any(|p| f.contains(p));
    let mut own: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let mut samples = 0.0;
    for s in &p.sample {
        let v = s.value.get(column).copied().unwrap_or(0) as f64;
        samples += v;
        let name = s.location_id.iter().filter_map(|id| leaf.get(id).copied()).find(|f| !profiler(f)).unwrap_or("(unknown)");
        *own.entry(name).or_default() += v;
    }
    // An idle process's profile is empty, and says so in the report.
    let mut top: Vec<(String, f64)> = own.into_iter().filter(|_| samples > 0.0).map(|(n, v)| (n.to_string(), v / samples)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(3);
    Ok(HotPath { samples, top })
}

/// Everything found in one run's directory.
#[derive(Debug, Clone)]
pub(crate) struct RunFiles {
    pub summary: K6Summary,
    pub points: Option<K6Points>,
    pub lighthouse: Vec<Lighthouse>,
    pub marks: Option<(Mark, Mark)>,
    pub hot_path: Option<HotPath>,
    pub files: Vec<String>,
}

pub(crate) fn read_run(dir: &Path) -> Result<RunFiles, InputError> {
    let entries = std::fs::read_dir(dir).map_err(|source| InputError::Read { path: dir.into(), source })?;
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lower = |p: &PathBuf| name(p).to_ascii_lowercase();
    let is_profile = |n: &str| n.ends_with(".pb.gz") || n.ends_with(".pb") || n.ends_with(".pprof");
    let mut json: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| lower(p).ends_with(".json") || is_profile(&lower(p))).collect();
    json.sort();
    // Each kind by its name; two of one kind is a question only the user can answer.
    let one = |kind: &str, want: &dyn Fn(&str) -> bool| -> Result<Option<PathBuf>, InputError> {
        let found: Vec<&PathBuf> = json.iter().filter(|p| want(&lower(p))).collect();
        match found[..] {
            [] => Ok(None),
            [p] => Ok(Some(p.clone())),
            _ => Err(InputError::Shape {
                path: dir.into(),
                what: format!(
                    "several {kind} files ({}): keep one per run directory",
                    found.iter().map(|p| name(p)).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    };
    let k6 = |n: &str| n.ends_with(".json") && !n.starts_with("lighthouse") && !n.starts_with("portier-");
    let profile_path = one("CPU profile (*.pb.gz, *.pb, *.pprof)", &|n| is_profile(n))?;
    let summary_path =
        one("k6 summary (*summary*.json)", &|n| k6(n) && n.contains("summary"))?.ok_or_else(|| InputError::NoSummary(dir.into()))?;
    let points_path = one("k6 points (*metrics*.json)", &|n| k6(n) && n.contains("metrics"))?;
    let lighthouse_paths: Vec<&PathBuf> =
        json.iter().filter(|p| lower(p).starts_with("lighthouse") && lower(p).ends_with(".json")).collect();
    let (start, end) = (dir.join("portier-start.json"), dir.join("portier-end.json"));
    let marks = match (start.exists(), end.exists()) {
        (true, true) => Some((mark(&start)?, mark(&end)?)),
        (false, false) => None,
        _ => return Err(InputError::Shape { path: dir.into(), what: "one of portier-start.json / portier-end.json is missing".into() }),
    };
    let mut files = vec![name(&summary_path)];
    files.extend(points_path.iter().map(name));
    files.extend(lighthouse_paths.iter().map(|p| name(p)));
    if marks.is_some() {
        files.extend(["portier-start.json".to_string(), "portier-end.json".to_string()]);
    }
    files.extend(profile_path.iter().map(name));
    Ok(RunFiles {
        summary: summary(&summary_path)?,
        points: points_path.as_deref().map(points).transpose()?,
        lighthouse: lighthouse_paths.into_iter().map(|p| lighthouse(p)).collect::<Result<Vec<_>, _>>()?,
        marks,
        hot_path: profile_path.as_deref().map(profile).transpose()?,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_timestamps() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 95.0) - 95.05).abs() < 1e-9, "k6's interpolation");
        assert_eq!(percentile(&[10.0, 1000.0], 95.0), 950.5);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 95.0), 0.0);
        assert_eq!(rfc3339_ms("2026-12-07T10:00:01.250+01:00"), Some(1_796_634_001_250));
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn a_profiles_widest_functions_by_own_samples() {
        use pprof::protos::{Function, Line, Location, Message as _, Profile, Sample, ValueType};
        let strings =
            ["", "samples", "count", "cpu", "nanoseconds", "main", "parse", "memcpy", "backtrace::trace"].map(String::from).to_vec();
        let loc = |id: u64, f: u64| Location { id, line: vec![Line { function_id: f, line: 1 }], ..Default::default() };
        let p = Profile {
            sample_type: vec![ValueType { ty: 1, unit: 2 }, ValueType { ty: 3, unit: 4 }],
            function: (1..=4).map(|id| Function { id, name: 4 + id as i64, ..Default::default() }).collect(),
            location: vec![loc(1, 1), loc(2, 2), loc(3, 3), loc(4, 4)],
            // memcpy under parse under main: 30 ns; parse itself 20; main 10.
            sample: vec![
                Sample { location_id: vec![3, 2, 1], value: vec![3, 30], ..Default::default() },
                Sample { location_id: vec![2, 1], value: vec![2, 20], ..Default::default() },
                Sample { location_id: vec![1], value: vec![5, 10], ..Default::default() },
                // The profiler's own unwinding frame on top: the time is memcpy's.
                Sample { location_id: vec![4, 3, 2, 1], value: vec![1, 6], ..Default::default() },
            ],
            string_table: strings,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu.pb.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &p.encode_to_vec()).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let h = profile(&path).unwrap();
        assert_eq!(h.samples, 66.0, "the cpu column, not the counts");
        let names: Vec<&str> = h.top.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["memcpy", "parse", "main"]);
        assert!((h.top[0].1 - 36.0 / 66.0).abs() < 1e-12, "{h:?}");
        std::fs::write(&path, b"not a profile").unwrap();
        assert!(profile(&path).unwrap_err().to_string().contains("not a pprof profile"));
    }

    #[test]
    fn inputs_that_would_exhaust_memory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Empty samples, two bytes each in the file, tens once decoded.
        let path = dir.path().join("cpu.pb");
        std::fs::write(&path, [0x12u8, 0x00].repeat(4_000_001)).unwrap();
        assert!(profile(&path).unwrap_err().to_string().contains("more samples"), "a crafted profile");
        // Two k6 points eight days apart: millions of per-second rows.
        let points_path = dir.path().join("ramp-metrics.json");
        let point = |t: &str| {
            format!("{{\"type\":\"Point\",\"metric\":\"http_req_duration\",\"data\":{{\"time\":\"{t}\",\"value\":1.0,\"tags\":{{}}}}}}\n")
        };
        std::fs::write(&points_path, point("2026-12-01T00:00:00Z") + &point("2026-12-09T00:00:00Z")).unwrap();
        assert!(points(&points_path).unwrap_err().to_string().contains("7 days"));
    }
}

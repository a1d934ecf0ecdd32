//! `portier report mark DIR start|end` and `portier report build --run NAME=DIR ...`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum ReportCommand {
    /// Sample Portier's counters (the admin listener's /metrics/totals) into
    /// DIR/portier-start.json or DIR/portier-end.json: run it before and after a k6 run.
    Mark {
        /// The run's results directory (where k6 writes ramp-summary.json).
        dir: PathBuf,
        #[arg(value_parser = ["start", "end"])]
        which: String,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// Build report.html, report.md and report.json from run directories: each holds a k6
    /// summary (*summary*.json), and optionally k6 points (*metrics*.json), Lighthouse
    /// reports (lighthouse*.json) and the two marks.
    Build {
        /// NAME=DIR, once per run, the baseline first (e.g. --run baseline=results/before
        /// --run optimised=results/after).
        #[arg(long = "run", required = true)]
        runs: Vec<String>,
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// gCO2e per kWh: world (494, the model's default), FR (44.18), or a number.
        #[arg(long, default_value = "world")]
        grid_intensity: String,
        /// Six kWh/GB figures replacing the model's: operational then embodied, each for data
        /// centre, network and device (default 0.055,0.059,0.080,0.012,0.013,0.081).
        #[arg(long)]
        swd_constants: Option<String>,
        #[arg(long, default_value = "Eco-design report")]
        title: String,
        /// Read Portier's counters over each run from this Prometheus (e.g.
        /// http://127.0.0.1:9090) instead of the marks, and chart the hit ratio; the window is
        /// the marks' times, else the first and last k6 points.
        #[arg(long)]
        prometheus: Option<String>,
        /// `service_name` of Portier's span metrics in that Prometheus.
        #[arg(long, default_value = "proxy")]
        service_name: String,
        /// That Prometheus's scrape interval: a run's end is read one interval later (keep
        /// Portier idle that long after a run, or use the marks).
        #[arg(long, default_value = "15s")]
        scrape_interval: String,
    },
}

pub(crate) fn command(c: ReportCommand) -> ExitCode {
    let result = match c {
        ReportCommand::Mark { dir, which, admin } => crate::report::mark(&dir, &which, &admin).map(|p| vec![p]),
        ReportCommand::Build { runs, out, grid_intensity, title, prometheus, service_name, scrape_interval, swd_constants } => {
            let scrape_interval = match scrape_interval.parse::<crate::config::HumanDuration>() {
                Ok(d) => d.get(),
                Err(e) => return super::fail(format!("--scrape-interval: {e}")),
            };
            let sources = crate::report::Sources {
                prometheus: prometheus.as_deref(),
                service_name: &service_name,
                scrape_interval,
                swd_constants: swd_constants.as_deref(),
            };
            crate::report::build(&runs, &out, &grid_intensity, &title, &sources)
        }
    };
    match result {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

//! `portier check`: every problem of a config file at once, or OK.

use crate::config;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn check(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(c) => {
            println!("{}: OK ({} upstream pools, {} routes)", path.display(), c.upstreams.len(), c.routes.len());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{problems}");
            ExitCode::from(1)
        }
    }
}

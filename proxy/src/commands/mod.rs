//! The `portier` command line.

mod check;
pub mod demo;
mod hash_password;
mod healthcheck;
pub(crate) mod proof;
mod reload;
mod report;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The sample config, built in so `portier demo` works from any directory.
pub const SAMPLE_CONFIG: &str = include_str!("../../../config/portier.toml");
const DEFAULT_CONFIG: &str = "config/portier.toml";

#[derive(Parser, Debug)]
#[command(name = "portier", version, about = "A caching reverse proxy with built-in observability, on Pingora")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run from a config file.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every problem and exit 1.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Proxy everything to one upstream, no config file (like `caddy reverse-proxy`).
    Proxy {
        /// Public address, e.g. 0.0.0.0:8080.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// Upstream, e.g. http://127.0.0.1:3000 or 127.0.0.1:3000.
        #[arg(long)]
        upstream: String,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// A cache shared with other replicas, e.g. redis://127.0.0.1:6379/0
        /// (or `PORTIER_CACHE_SHARED_URL`).
        #[arg(long)]
        shared_cache: Option<String>,
    },
    /// Prove the cache on a Portier-fronted URL: MISS, HIT with a growing Age, 304 with the
    /// ETag (and with --stale, STALE then HIT). Exit 0 only when every step passed.
    Proof {
        /// e.g. http://localhost:8080/api/stats/summary
        url: String,
        /// A request to send first, e.g. "POST /api/sync?username=demo".
        #[arg(long)]
        invalidate: Option<String>,
        /// Fills the `username` query parameter (of the URL and of --invalidate).
        #[arg(long)]
        username: Option<String>,
        /// Also wait past max-age and expect STALE, then a fresh HIT.
        #[arg(long)]
        stale: bool,
        /// Seconds between the first and second GET.
        #[arg(long, default_value_t = 1.1)]
        wait: f64,
        #[arg(long, value_enum, default_value = "text")]
        format: ProofFormat,
    },
    /// Ask the running Portier to read its configuration file again (as SIGHUP does): prints
    /// the keys that need a restart to change, or every problem of an invalid file (exit 1;
    /// the running configuration stays).
    Reload {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// `listen.admin_token`, when the running Portier has one (default: the
        /// `PORTIER_ADMIN_TOKEN` environment variable).
        #[arg(long)]
        token: Option<String>,
    },
    /// Exit 0 when the admin `/healthz` answers 200 (for container health checks: no curl needed).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// Read a password on standard input and print its bcrypt hash, for a route's
    /// `basic_auth.users` (the format `caddy hash-password` and `htpasswd -B` write).
    HashPassword {
        /// bcrypt cost (4 to 31): each step doubles the time to check a password.
        #[arg(long, default_value_t = 12)]
        cost: u32,
    },
    /// The eco-design report: mark each run's start and end, then build it from the runs'
    /// k6, Lighthouse and Portier files.
    Report {
        #[command(subcommand)]
        command: report::ReportCommand,
    },
    /// Start the sample origin and Portier in front of it, and print what to try.
    Demo {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: String,
        /// Where the sample origin listens.
        #[arg(long, default_value = "127.0.0.1:3001")]
        origin: String,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
        /// Config to wire the origin into (both pools point at the origin); the built-in
        /// sample is used when this file does not exist.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ProofFormat {
    Text,
    Json,
    Markdown,
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("portier: {msg}");
    ExitCode::from(1)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check::check(&config),
        Command::Run { config } => run::run(config),
        Command::Proxy { listen, upstream, admin, shared_cache } => run::proxy(&listen, &upstream, &admin, shared_cache.as_deref()),
        Command::Demo { listen, origin, admin, config } => demo::command::demo(&listen, &origin, &admin, &config),
        Command::Proof { url, invalidate, username, stale, wait, format } => {
            proof::command(&url, invalidate, username, stale, wait, format)
        }
        Command::HashPassword { cost } => hash_password::hash_password(cost),
        Command::Reload { admin, token } => reload::command(&admin, token.or_else(|| std::env::var("PORTIER_ADMIN_TOKEN").ok()).as_deref()),
        Command::Healthcheck { admin } => healthcheck::command(&admin),
        Command::Report { command } => report::command(command),
    }
}

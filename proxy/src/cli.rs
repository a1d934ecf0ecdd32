//! The `portier` command line.

use crate::config::{self, Config, HostPort, ListenAddr, Route, Upstream};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The sample config, built in so `portier demo` works from any directory.
pub const SAMPLE_CONFIG: &str = include_str!("../../config/portier.toml");
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

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("portier: {msg}");
    ExitCode::from(1)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load_file(&config) {
            Ok(c) => {
                println!("{}: OK ({} upstream pools, {} routes)", config.display(), c.upstreams.len(), c.routes.len());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprint!("{problems}");
                ExitCode::from(1)
            }
        },
        Command::Run { config } => match config::load_file(&config) {
            Ok(c) => serve(c, Some(config)),
            Err(problems) => {
                eprint!("{problems}");
                ExitCode::from(1)
            }
        },
        Command::Proxy { listen, upstream, admin, shared_cache } => match quick_config(&listen, &upstream, &admin, shared_cache.as_deref())
        {
            Ok(c) => serve(c, None),
            Err(e) => fail(e),
        },
        Command::Demo { listen, origin, admin, config } => demo(&listen, &origin, &admin, &config),
        Command::Proof { url, invalidate, username, stale, wait, format } => {
            let o = crate::proof::Options { invalidate, username, stale, wait: std::time::Duration::from_secs_f64(wait.clamp(0.0, 60.0)) };
            match crate::proof::run(&url, &o) {
                Ok(report) => {
                    let out = match format {
                        ProofFormat::Text => crate::proof::render_text(&report),
                        ProofFormat::Markdown => crate::proof::render_markdown(&report),
                        ProofFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
                    };
                    print!("{out}");
                    if report.passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::HashPassword { cost } => hash_password(cost),
        Command::Reload { admin, token } => match reload(&admin, token.or_else(|| std::env::var("PORTIER_ADMIN_TOKEN").ok()).as_deref()) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Healthcheck { admin } => match healthcheck(&admin) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("unhealthy: {e}")),
        },
    }
}

fn serve(c: Config, source: Option<PathBuf>) -> ExitCode {
    serve_then(c, source, |_| {})
}

fn serve_then(c: Config, source: Option<PathBuf>, on_bound: impl FnOnce(crate::server::BoundAddrs)) -> ExitCode {
    match crate::server::run(c, source, on_bound) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// `portier proxy`: one pool, one catch-all route, every other setting at its default.
pub fn quick_config(listen: &str, upstream: &str, admin: &str, shared_cache: Option<&str>) -> Result<Config, String> {
    let target = upstream.strip_prefix("http://").unwrap_or(upstream).trim_end_matches('/');
    if target.contains("://") {
        return Err(format!("--upstream {upstream:?}: only http:// upstreams are supported"));
    }
    let target: HostPort = target.parse().map_err(|e| format!("--upstream: {e}"))?;
    let mut c = Config::default();
    c.listen.public = listen.parse::<ListenAddr>().map_err(|e| format!("--listen: {e}"))?;
    c.listen.admin = admin.parse::<ListenAddr>().map_err(|e| format!("--admin: {e}"))?;
    let from_env = std::env::var("PORTIER_CACHE_SHARED_URL").ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = shared_cache.map(str::to_string).or(from_env) {
        c.cache.shared.url = Some(url.parse().map_err(|e| format!("--shared-cache: {e}"))?);
    }
    c.upstreams.insert(
        "upstream".into(),
        Upstream {
            addresses: vec![target],
            health_check: None,
            max_fails: 2,
            fail_timeout: config::HumanDuration::from_secs(10),
            tls: None,
        },
    );
    c.routes.push(Route::new(None, config::PathPattern::everything(), "upstream"));
    Ok(c)
}

fn demo(listen: &str, origin: &str, admin: &str, config_path: &Path) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let loaded = if config_path.exists() {
        config::load_file(config_path)
    } else {
        config::load_str(SAMPLE_CONFIG, "built-in config/portier.toml", env)
    };
    let mut c = match loaded {
        Ok(c) => c,
        Err(p) => {
            eprint!("{p}");
            return ExitCode::from(1);
        }
    };
    let origin_addr = match origin.parse::<ListenAddr>() {
        Ok(a) => a.0,
        Err(e) => return fail(format!("--origin: {e}")),
    };
    let origin = match crate::demo::Origin::start_in_thread(origin_addr) {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot start the sample origin on {origin_addr}: {e}")),
    };
    let origin_hp = HostPort { host: origin.addr.ip().to_string(), port: origin.addr.port() };
    for pool in c.upstreams.values_mut() {
        pool.addresses = vec![origin_hp.clone()];
    }
    match (listen.parse::<ListenAddr>(), admin.parse::<ListenAddr>()) {
        (Ok(l), Ok(a)) => {
            c.listen.public = l;
            c.listen.admin = a;
        }
        (Err(e), _) => return fail(format!("--listen: {e}")),
        (_, Err(e)) => return fail(format!("--admin: {e}")),
    }
    // The demo rewrites the file's pools to the sample origin: there is no file to reload.
    serve_then(c, None, move |bound| {
        let public = match bound.public {
            a if a.ip().is_unspecified() => format!("localhost:{}", a.port()),
            a => a.to_string(),
        };
        let admin = bound.admin;
        eprintln!(
            "\nPortier demo: sample origin on {origin}, Portier on {public}, admin on {admin}\n\
             Try:\n  \
             curl -i http://{public}/health\n  \
             curl -i \"http://{public}/api/stats/summary?username=demo\"      # X-Cache: MISS, then HIT with a growing Age\n  \
             curl -i -H 'If-None-Match: \"<etag from above>\"' \"http://{public}/api/stats/summary?username=demo\"   # 304\n  \
             curl -i -X POST \"http://{public}/api/sync?username=demo\"      # changes the data (and invalidates it)\n  \
             curl -s http://{admin}/readyz\n  \
             portier proof http://{public}/api/stats/summary --username demo --invalidate \"POST /api/sync\"   # the whole proof\n  \
             open http://{public}/ in a browser (DevTools > Network shows the headers)\n",
            origin = origin.addr
        );
    })
}

fn hash_password(cost: u32) -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return fail(format!("cannot read the password on standard input: {e}"));
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return fail("empty password (write it on standard input, e.g. `echo -n 's3cret' | portier hash-password`)");
    }
    match bcrypt::hash(password, cost) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot hash: {e}")),
    }
}

/// `GET /healthz` on the admin listener, with a short timeout.
fn reload(admin: &str, token: Option<&str>) -> Result<String, String> {
    use crate::http_client::{send_blocking, Request};
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let req = Request { method: "POST", target: "/config/reload", host: admin, headers: &headers, body: b"" };
    let resp = send_blocking(admin, &req, std::time::Duration::from_secs(30)).map_err(|e| format!("{admin}: {e}"))?;
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    match (resp.status, body["restart_needed_for"].as_array()) {
        (200, Some(kept)) if kept.is_empty() => Ok("reloaded".into()),
        (200, Some(kept)) => {
            let keys: Vec<&str> = kept.iter().filter_map(|k| k.as_str()).collect();
            Ok(format!("reloaded; these keep their running value until a restart: {}", keys.join(", ")))
        }
        (status, _) => Err(format!("reload refused ({status}): {}", body["error"].as_str().unwrap_or("no reason given"))),
    }
}

fn healthcheck(admin: &str) -> Result<(), String> {
    use crate::http_client::{send_blocking, Request};
    let req = Request { method: "GET", target: "/healthz", host: admin, headers: &[], body: b"" };
    let head = send_blocking(admin, &req, std::time::Duration::from_secs(2)).map_err(|e| format!("{admin}: {e}"))?;
    if head.status == 200 {
        Ok(())
    } else {
        Err(format!("{admin}/healthz answered {}", head.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_takes_a_shared_cache_url_and_refuses_a_bad_one() {
        let c = quick_config("127.0.0.1:0", "127.0.0.1:3000", "127.0.0.1:0", Some("redis://127.0.0.1:6379/0")).unwrap();
        assert_eq!(c.cache.shared.url.as_ref().map(|u| u.as_str()), Some("redis://127.0.0.1:6379/0"));
        let e = quick_config("127.0.0.1:0", "127.0.0.1:3000", "127.0.0.1:0", Some("http://cache:6379")).unwrap_err();
        assert!(e.starts_with("--shared-cache: "), "{e}");
    }
}

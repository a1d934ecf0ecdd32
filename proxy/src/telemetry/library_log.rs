//! Pingora's own `log` lines (a dropped connection, a TLS handshake that failed, an upstream
//! read error) written as Portier events, so they reach Loki with everything else instead of
//! going nowhere (no `log` backend was installed).

use std::sync::OnceLock;

struct ToEvents {
    max: log::LevelFilter,
}

impl log::Log for ToEvents {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.max
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        let message = r.args().to_string();
        super::events::emit(level, "library", &[("target", r.target()), ("message", &message)]);
    }

    fn flush(&self) {}
}

/// `PORTIER_LIBRARY_LOG` = `error`, `warn` (the default: Pingora's `info` lines are per
/// connection), `info`, `debug` or `off`. Installed once per process; later calls do nothing.
pub(crate) fn install(env: impl Fn(&str) -> Option<String>) {
    static LOGGER: OnceLock<ToEvents> = OnceLock::new();
    let max = match env("PORTIER_LIBRARY_LOG").as_deref().map(str::trim) {
        Some("off") => log::LevelFilter::Off,
        Some("error") => log::LevelFilter::Error,
        Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        _ => log::LevelFilter::Warn,
    };
    let logger = LOGGER.get_or_init(|| ToEvents { max });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.max);
    }
}

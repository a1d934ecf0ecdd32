//! Pingora's own `log` lines (a dropped connection, a TLS handshake that failed, an upstream
//! read error) and the `tracing` events of the HTTP/2 and QUIC stacks (h2, quinn, h3)
//! written as Portier events, so they reach Loki with everything else instead of going
//! nowhere (no `log` backend was installed).
//!
//! The `tracing` side is a subscriber of its own rather than tracing's `log` feature: with
//! that feature and no subscriber, every span h2 opens and enters (about 170 per HTTP/2
//! request) is offered to `log` and recorded, ~10,000 instructions per request for lines
//! that are never written. With this subscriber's level as tracing's maximum, h2's `trace`
//! spans are off at their call site.

use std::sync::{Mutex, OnceLock};

/// At most this many library lines a second. A client can make a library warn once per
/// frame it sends (h2: "recv PING ack that we never sent", 17 bytes each): without a bound
/// that is a flood of the log, its disk and its reader, sent from anywhere.
const LINES_PER_SECOND: u32 = 100;

/// This second's count of library lines, and how many it dropped.
static BUDGET: Mutex<Budget> = Mutex::new(Budget { second: 0, written: 0, dropped: 0 });

struct Budget {
    second: u64,
    written: u32,
    dropped: u64,
}

/// Whether this second's budget has room for one more library line, checked before the
/// line is formatted (a flood costs a lock and a count per line, not its text). The first
/// line after a second that dropped some is preceded by one saying how many.
fn admit() -> bool {
    let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (write, dropped_before) = {
        let mut b = BUDGET.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut dropped_before = 0;
        if b.second != second {
            dropped_before = std::mem::take(&mut b.dropped);
            *b = Budget { second, written: 0, dropped: 0 };
        }
        let write = b.written < LINES_PER_SECOND;
        if write {
            b.written += 1;
        } else {
            b.dropped += 1;
        }
        (write, dropped_before)
    };
    if dropped_before > 0 {
        let mut n = itoa::Buffer::new();
        super::events::emit("warn", "library_lines_dropped", &[("dropped", n.format(dropped_before))]);
    }
    write
}

fn write_line(level: &str, target: &str, message: &str) {
    super::events::emit(level, "library", &[("target", target), ("message", message)]);
}

struct ToEvents {
    max: log::LevelFilter,
}

impl log::Log for ToEvents {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.max
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) || !admit() {
            return;
        }
        let level = match r.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug | log::Level::Trace => "debug",
        };
        let message = r.args().to_string();
        write_line(level, r.target(), &message);
    }

    fn flush(&self) {}
}

/// `tracing` events at or above `max`, as [`ToEvents`] writes `log` records; spans are
/// neither kept nor written.
struct TracingToEvents {
    max: tracing::level_filters::LevelFilter,
}

impl tracing::Subscriber for TracingToEvents {
    fn register_callsite(&self, m: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if self.enabled(m) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.is_event() && *m.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        // Never called for a disabled span; an id is still owed to any that slips through.
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, e: &tracing::Event<'_>) {
        let level = match *e.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warn",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        if !admit() {
            return;
        }
        let mut message = Message(String::new());
        e.record(&mut message);
        write_line(level, e.metadata().target(), &message.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// An event's `message` first, then its other fields as `name=value`.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let sep = if self.0.is_empty() { "" } else { " " };
        let _ =
            if field.name() == "message" { write!(self.0, "{sep}{value:?}") } else { write!(self.0, "{sep}{}={value:?}", field.name()) };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            let sep = if self.0.is_empty() { "" } else { " " };
            self.0.push_str(sep);
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// The level `PORTIER_LIBRARY_LOG` names: `error`, `warn` (the default: Pingora's `info`
/// lines are per connection), `info`, `debug` or `off`.
fn level(env: impl Fn(&str) -> Option<String>) -> log::LevelFilter {
    match env("PORTIER_LIBRARY_LOG").as_deref().map(str::trim) {
        Some("off") => log::LevelFilter::Off,
        Some("error") => log::LevelFilter::Error,
        Some("info") => log::LevelFilter::Info,
        Some("debug") => log::LevelFilter::Debug,
        _ => log::LevelFilter::Warn,
    }
}

/// Installs both forwarders at the level `PORTIER_LIBRARY_LOG` names. Once per process;
/// later calls do nothing.
pub(crate) fn install(env: impl Fn(&str) -> Option<String>) {
    static LOGGER: OnceLock<ToEvents> = OnceLock::new();
    let max = level(env);
    let logger = LOGGER.get_or_init(|| ToEvents { max });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.max);
    }
    let max = match logger.max {
        log::LevelFilter::Off => tracing::level_filters::LevelFilter::OFF,
        log::LevelFilter::Error => tracing::level_filters::LevelFilter::ERROR,
        log::LevelFilter::Warn => tracing::level_filters::LevelFilter::WARN,
        log::LevelFilter::Info => tracing::level_filters::LevelFilter::INFO,
        log::LevelFilter::Debug | log::LevelFilter::Trace => tracing::level_filters::LevelFilter::DEBUG,
    };
    // Already set (a second server in one test process): the first one's stands.
    let _ = tracing::subscriber::set_global_default(TracingToEvents { max });
}

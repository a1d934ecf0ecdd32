//! One line per request on stdout (JSON for promtail/Loki, or text). Lines go through a
//! bounded queue to a writer thread: a slow or blocked stdout never slows a request; when the
//! queue is full the line is dropped and counted.

use crate::config::LogFormat;
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

const QUEUE: usize = 16 * 1024;

pub struct AccessLog {
    format: LogFormat,
    tx: Option<SyncSender<String>>,
    pub dropped: AtomicU64,
}

/// One finished request.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub cache_status: &'a str,
    pub duration_ms: f64,
    pub origin_ms: Option<f64>,
    pub bytes: u64,
    pub client: Option<String>,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
}

impl AccessLog {
    pub fn new(format: LogFormat) -> AccessLog {
        let tx = (format != LogFormat::Off).then(|| {
            let (tx, rx) = sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
                let stdout = std::io::stdout();
                while let Ok(line) = rx.recv() {
                    let mut out = stdout.lock();
                    let _ = out.write_all(line.as_bytes());
                    // Drain what queued meanwhile under one lock and one flush.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                }
            });
            spawned.ok().map(|_| tx)
        });
        AccessLog { format, tx: tx.flatten(), dropped: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, r: &AccessRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            LogFormat::Json => {
                let mut v = json!({
                    "time": super::time::rfc3339_now(),
                    "level": "info",
                    "event": "request",
                    "method": r.method,
                    "host": r.host,
                    "path": r.path,
                    "route": r.route,
                    "status": r.status,
                    "cache_status": r.cache_status,
                    "duration_ms": (r.duration_ms * 1000.0).round() / 1000.0,
                    "bytes": r.bytes,
                    "client": r.client,
                    "request_id": r.request_id,
                });
                if let Some(o) = r.origin_ms {
                    v["origin_ms"] = json!((o * 1000.0).round() / 1000.0);
                }
                if let Some(t) = r.trace_id {
                    v["trace_id"] = json!(t);
                }
                v.to_string() + "\n"
            }
            LogFormat::Text => format!(
                "{} {} {} {} {} {} {:.1}ms origin={} {}B client={} id={} trace={}\n",
                super::time::rfc3339_now(),
                r.client.as_deref().unwrap_or("-"),
                r.method,
                r.path,
                r.status,
                r.cache_status,
                r.duration_ms,
                r.origin_ms.map(|o| format!("{o:.1}ms")).unwrap_or_else(|| "-".into()),
                r.bytes,
                r.client.as_deref().unwrap_or("-"),
                r.request_id,
                r.trace_id.unwrap_or("-"),
            ),
            LogFormat::Off => return,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

//! One line per request on stdout (JSON for promtail/Loki, or text). Requests append their
//! line to a shared buffer; a writer thread takes the whole buffer every 20 ms (sooner when
//! it grows large) and writes it in one go. No request waits on stdout or wakes a thread,
//! and when stdout cannot keep up, lines beyond the buffer limit are dropped and counted.

use super::RequestSummary as AccessRecord;
use crate::config::LogFormat;
use parking_lot::{Condvar, Mutex};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Past this many buffered bytes, lines are dropped (stdout is not being read).
const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// Past this many, the writer is woken early.
const WAKE_AT: usize = 256 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(20);

#[derive(Default)]
struct LogBuffer {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
}

pub(crate) struct AccessLog {
    format: LogFormat,
    shared: Option<Arc<LogBuffer>>,
    pub dropped: AtomicU64,
}

impl AccessLog {
    pub(crate) fn new(format: LogFormat) -> AccessLog {
        let shared = (format != LogFormat::Off).then(|| {
            let shared = Arc::new(LogBuffer::default());
            let s2 = shared.clone();
            let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
                let mut out_buf = Vec::with_capacity(WAKE_AT);
                loop {
                    {
                        let mut buf = s2.buf.lock();
                        if buf.is_empty() {
                            s2.wake.wait_for(&mut buf, FLUSH_EVERY);
                        }
                        std::mem::swap(&mut *buf, &mut out_buf);
                    }
                    if !out_buf.is_empty() {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&out_buf);
                        let _ = out.flush();
                        out_buf.clear();
                    }
                }
            });
            spawned.ok().map(|_| shared)
        });
        AccessLog { format, shared: shared.flatten(), dropped: AtomicU64::new(0) }
    }

    /// Writes what is buffered now, on the caller's thread: the process is about to exit and
    /// the writer thread's next round may never come.
    pub(crate) fn flush(&self) {
        let Some(shared) = &self.shared else { return };
        let pending = std::mem::take(&mut *shared.buf.lock());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }

    pub(crate) fn log(&self, r: &AccessRecord<'_>) {
        let Some(shared) = &self.shared else { return };
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match self.format {
                LogFormat::Json => write_json_line(&mut line, r),
                LogFormat::Text => line.push_str(&text_line(r)),
                LogFormat::Off => return,
            }
            let mut buf = shared.buf.lock();
            if buf.len() + line.len() > MAX_BUFFERED {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            buf.extend_from_slice(line.as_bytes());
            if buf.len() >= WAKE_AT {
                shared.wake.notify_one();
            }
        });
    }
}

/// Whether `b` holds a byte JSON must escape (`"`, `\\`, or below 0x20), eight bytes per step
/// (the byte-by-byte scan was ~900 instructions of every access log line).
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `w` is zero: its high bit set in the result (no false positives for the
    // any/none question asked here).
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        if below_space | zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20)
}

/// Appends `s` as a JSON string (quotes and escapes included).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most values need no escape: one scan, one copy.
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `time client method path status cache duration origin bytes id trace`.
fn text_line(r: &AccessRecord<'_>) -> String {
    format!(
        "{} {} {} {} {} {} {:.1}ms origin={} {}B id={} trace={}\n",
        super::time::rfc3339_now(),
        r.client.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        r.method,
        r.path,
        r.status,
        r.cache_status.name,
        r.duration_ms,
        r.origin_ms.map(|o| format!("{o:.1}ms")).unwrap_or_else(|| "-".into()),
        r.bytes,
        r.request_id,
        r.trace_id.unwrap_or("-"),
    )
}

/// The JSON line, written by hand: a serde_json `Value` per request costs a map and a dozen
/// allocations on the hot path.
#[cfg(test)]
fn json_line(r: &AccessRecord<'_>) -> String {
    let mut o = String::with_capacity(384);
    write_json_line(&mut o, r);
    o
}

/// [`json_line`] appended to `o` (a buffer each thread reuses: no allocation per line).
fn write_json_line(o: &mut String, r: &AccessRecord<'_>) {
    o.push_str("{\"time\":\"");
    super::time::push_rfc3339_now(o);
    o.push_str("\",\"level\":\"info\",\"event\":\"request\",\"method\":");
    push_json_str(o, r.method);
    o.push_str(",\"host\":");
    push_json_str(o, r.host);
    o.push_str(",\"path\":");
    push_json_str(o, r.path);
    o.push_str(",\"protocol\":\"");
    o.push_str(r.protocol);
    o.push('"');
    o.push_str(",\"route\":");
    push_json_str(o, r.route);
    o.push_str(",\"status\":");
    crate::text::push_u64(o, u64::from(r.status));
    o.push_str(",\"cache_status\":");
    push_json_str(o, r.cache_status.name);
    o.push_str(",\"duration_ms\":");
    crate::text::push_fixed(o, r.duration_ms, 3);
    if let Some(ms) = r.origin_ms {
        o.push_str(",\"origin_ms\":");
        crate::text::push_fixed(o, ms, 3);
    }
    o.push_str(if r.stored { ",\"stored\":true,\"bytes\":" } else { ",\"stored\":false,\"bytes\":" });
    crate::text::push_u64(o, r.bytes);
    o.push_str(",\"encoding\":");
    push_json_str(o, r.encoding);
    o.push_str(",\"client\":");
    match r.client {
        // IPv4 by hand: `Display` for an address went through `core::fmt` (1.2k instructions).
        Some(std::net::IpAddr::V4(v4)) => {
            o.push('"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    o.push('.');
                }
                crate::text::push_u64(o, u64::from(octet));
            }
            o.push('"');
        }
        Some(c) => {
            let _ = write!(o, "\"{c}\"");
        }
        None => o.push_str("null"),
    }
    o.push_str(",\"request_id\":");
    push_json_str(o, r.request_id);
    if let Some(t) = r.trace_id {
        o.push_str(",\"trace_id\":");
        push_json_str(o, t);
    }
    o.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_scan_finds_every_byte_json_escapes() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()), "{len}");
            for at in 0..len {
                for special in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                    let mut v = plain.clone().into_bytes();
                    v[at] = special;
                    assert!(needs_escape(&v), "{len} {at} {special}");
                }
                for fine in [b' ', 0x7f, 0xc3, b'~', b'!', b'#', b'['] {
                    let mut v = plain.clone().into_bytes();
                    v[at] = fine;
                    assert!(!needs_escape(&v), "{len} {at} {fine}");
                }
            }
        }
    }

    #[test]
    fn json_lines_parse_and_escape() {
        let r = AccessRecord {
            method: "GET",
            method_label: "GET",
            span_name: "GET /*",
            host: "h",
            path: "/a\"b\\c\u{1}",
            protocol: "2",
            scheme: "https",
            route: "/*",
            pool: "p",
            status: 200,
            cache_status: super::super::CacheLabel { name: "HIT", from_store: true },
            duration_ms: 1.23456,
            origin_ms: None,
            bytes: 5,
            encoding: "zstd",
            content_type: crate::telemetry::ContentClass::Json,
            client: None,
            request_id: "id",
            trace_id: Some("t"),
            stored: false,
        };
        let mut text = AccessRecord { client: Some("10.1.2.3".parse().unwrap()), ..r };
        text.path = "/p";
        let line = text_line(&text);
        assert_eq!(line.matches("10.1.2.3").count(), 1, "the client once: {line}");
        let line = json_line(&r);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\u{1}");
        assert_eq!(v["protocol"], "2");
        assert_eq!(v["duration_ms"], 1.235);
        assert!(v["client"].is_null());
        assert_eq!(v["encoding"], "zstd");
        assert!(v.get("origin_ms").is_none());
        assert_eq!(v["trace_id"], "t");
        for client in ["10.1.2.3", "0.0.0.255", "2001:db8::1"] {
            let line = json_line(&AccessRecord { client: Some(client.parse().unwrap()), ..r });
            let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
            assert_eq!(v["client"], client);
        }
    }
}

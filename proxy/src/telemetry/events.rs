//! Portier's own events (start, listening, health changes, shutdown) as JSON lines on stdout,
//! the same stream promtail ships to Loki with the access log.

use std::io::Write;

/// Writes `{"time":..,"level":..,"event":..,<fields>}` as one line.
pub(crate) fn emit(level: &str, event: &str, fields: &[(&str, &str)]) {
    let mut obj = serde_json::Map::new();
    obj.insert("time".into(), super::time::rfc3339_now().into());
    obj.insert("level".into(), level.into());
    obj.insert("event".into(), event.into());
    for (k, v) in fields {
        obj.insert((*k).into(), (*v).into());
    }
    let line = serde_json::Value::Object(obj).to_string();
    let mut out = std::io::stdout().lock();
    // stdout closed (e.g. a pipe reader gone) must not take the proxy down.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

//! Telemetry: Portier's own event log (and, as they land, metrics, traces, access logs, profiles).

pub mod events;
pub mod time;

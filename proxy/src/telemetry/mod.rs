//! Telemetry: metrics, Portier's own event log (and, as they land, traces, access logs, profiles).

pub mod events;
pub mod metrics;
pub mod names;
pub mod time;

//! Portier: a caching reverse proxy with built-in observability, on Pingora.
// A panic on the request path takes the worker's connections with it: no unwrap/expect
// outside tests (the fuzzing harness panics on purpose).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// `pub(crate)` by default: what is `pub` is what the binary, the benches and the fuzz targets use.
#![deny(unreachable_pub)]

pub(crate) mod cache;
pub mod commands;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod edge;
#[doc(hidden)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod fuzzing;
pub(crate) mod gateway;
pub(crate) mod http_client;
pub(crate) mod listeners;
pub(crate) mod report;
pub(crate) mod telemetry;
pub(crate) mod text;
pub(crate) mod upstream;

/// The sample origin the benches and tests start (`portier demo`'s).
pub use commands::demo;

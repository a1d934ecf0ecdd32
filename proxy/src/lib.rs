//! Portier: a caching reverse proxy with built-in observability, on Pingora.
// A panic on the request path takes the worker's connections with it: no unwrap/expect
// outside tests (the fuzzing harness panics on purpose).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod access;
pub(crate) mod acme;
pub(crate) mod admin;
pub(crate) mod cache;
pub mod cli;
pub(crate) mod compression;
pub(crate) mod config;
pub mod demo;
pub(crate) mod error_page;
pub(crate) mod forwarding;
#[doc(hidden)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod fuzzing;
pub(crate) mod gateway;
pub(crate) mod http_client;
pub(crate) mod limits;
pub(crate) mod operator;
pub(crate) mod proof;
pub(crate) mod reload;
pub(crate) mod response_headers;
pub(crate) mod routing;
pub(crate) mod server;
pub(crate) mod target;
pub(crate) mod telemetry;
pub(crate) mod text;
pub(crate) mod tls;
pub(crate) mod upstream;

//! Portier: a caching reverse proxy with built-in observability, on Pingora.

pub mod admin;
pub mod cache;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error_page;
pub mod forwarding;
pub mod gateway;
pub mod proof;
pub mod response_headers;
pub mod routing;
pub mod server;
pub mod target;
pub mod telemetry;
pub mod upstream;

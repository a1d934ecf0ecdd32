//! Every integration test in one binary, so Pingora is linked once instead of once per file.
//! Each module starts the sample origin and Portier on port 0 over real sockets; see `common`.

mod access;
mod acme;
mod cache_basics;
mod cache_conditional;
mod cache_invalidation;
mod cache_stale;
mod cache_storage;
mod chain;
mod common;
mod compression;
mod disk_cache;
mod docs;
mod foundation;
mod hardening;
mod http3;
mod layout;
mod lighthouse;
mod operator_ui;
mod profiling;
mod prometheus;
mod proof;
mod protocols;
mod reload;
mod report;
mod security;
mod shared_cache;
mod slow_clients;
mod stack;
mod streams;
mod telemetry;
mod tls;

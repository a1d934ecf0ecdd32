//! The admin listener: one thread serving [`crate::control::admin::Admin`].

use crate::control::admin::Admin;
use crate::control::reload::Reloader;
use crate::gateway::State;
use std::net::SocketAddr;
use std::sync::Arc;

pub(super) fn service(
    addr: SocketAddr,
    live: Arc<arc_swap::ArcSwap<State>>,
    reloader: Arc<Reloader>,
) -> pingora_core::services::listening::Service<Admin> {
    let mut svc = pingora_core::services::listening::Service::new("portier-admin".into(), Admin { live, reloader });
    svc.add_tcp(&addr.to_string());
    svc.threads = Some(1);
    svc
}

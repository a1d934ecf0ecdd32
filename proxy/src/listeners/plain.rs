//! The public listener in clear: HTTP/1.1 (and `h2c` prior knowledge is not offered).

use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use std::net::SocketAddr;

pub(super) fn listen<S>(proxy: &mut pingora_core::services::listening::Service<S>, addr: SocketAddr, buffers: L4BufferSettings) {
    proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers));
}

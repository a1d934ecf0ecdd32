//! The HTTPS listener: certificates chosen by SNI from [`crate::edge::tls::CertStore`],
//! HTTP/2 offered by ALPN when `tls.http2` is on.

use super::ServerError;
use crate::config::TlsConfig;
use crate::edge::tls::{CertStore, TlsError};
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use std::net::SocketAddr;
use std::sync::Arc;

pub(super) fn listen<S>(
    proxy: &mut pingora_core::services::listening::Service<S>,
    addr: SocketAddr,
    buffers: L4BufferSettings,
    store: Arc<CertStore>,
    t: &TlsConfig,
) -> Result<(), ServerError> {
    let mut settings = pingora_core::listeners::tls::TlsSettings::intermediate("", "")
        .map_err(|e| ServerError::Tls(TlsError::Read { path: "tls".into(), reason: e.to_string() }))?;
    settings.set_cert_resolver(store);
    if t.http2 {
        settings.enable_h2();
    }
    proxy.add_listener(ListenerConfig::tcp(addr.to_string()).tls(settings).l4_buffer(buffers));
    Ok(())
}

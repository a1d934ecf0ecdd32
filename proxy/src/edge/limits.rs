//! What one client may send or hold: the size of a request head (414, 431), a body per route
//! (413) and requests in flight per client address (503 with `Retry-After`). The head
//! deadline (408) and the connection limit act before a request exists, in Pingora's accept
//! and parse loop (`vendor/pingora-core`), configured from here by [`server_options`].

use crate::config::{Limits, Timeouts};
use pingora_core::apps::{ConnectionLimit, HttpServerOptions};
use pingora_core::protocols::http::BodyDeadline;
use pingora_http::RequestHeader;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A request head over a limit: the status and what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) status: u16,
    pub(crate) detail: &'static str,
}

/// RFC 9110 §15.5.15 (414) and RFC 6585 §5 (431).
pub(crate) fn check_head(req: &RequestHeader, limits: &Limits) -> Result<(), TooLarge> {
    if req.raw_path().len() as u64 > limits.max_uri.bytes() {
        return Err(TooLarge { status: 414, detail: "the request target is longer than this server accepts" });
    }
    if req.headers.len() > limits.max_header_count {
        return Err(TooLarge { status: 431, detail: "the request has more header fields than this server accepts" });
    }
    let mut total = 0u64;
    for (name, value) in &req.headers {
        // As on the wire: "name: value\r\n".
        let line = (name.as_str().len() + value.len() + 4) as u64;
        if line > limits.max_header.bytes() {
            return Err(TooLarge { status: 431, detail: "a request header field is larger than this server accepts" });
        }
        total += line;
    }
    if total > limits.max_headers.bytes() {
        return Err(TooLarge { status: 431, detail: "the request header fields are larger than this server accepts" });
    }
    Ok(())
}

/// A declared body over the route's limit is refused before anything is forwarded.
pub(crate) fn declared_body_too_large(req: &RequestHeader, max: u64) -> bool {
    crate::edge::target::content_length(&req.headers).is_some_and(|n| n > max)
}

/// The count of open connections against `limits.max_connections`.
pub(crate) fn connection_gate(limits: &Limits) -> Arc<ConnectionLimit> {
    let max = match limits.max_connections {
        0 => default_max_connections(),
        n => n,
    };
    Arc::new(ConnectionLimit::new(max, limits.retry_after.as_secs().max(1)))
}

/// Pingora's per-connection options: the deadlines of every listener and protocol (the TLS
/// handshake, the request head, the body, an idle HTTP/2 connection) and the connection limit,
/// which counts HTTP/1 and HTTP/2 connections alike.
pub(crate) fn server_options(limits: &Limits, timeouts: &Timeouts, gate: Arc<ConnectionLimit>) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.head_timeout = Some(limits.head_timeout.get());
    options.handshake_timeout = Some(limits.handshake_timeout.get());
    options.body_deadline = Some(BodyDeadline { base: limits.body_timeout.get(), min_rate: limits.min_body_rate.bytes() });
    // An HTTP/2 connection with no stream open is idle, as an HTTP/1 keep-alive one between requests.
    options.h2_idle_timeout = Some(timeouts.client_idle.get());
    options.connection_limit = Some(gate);
    options
}

/// Three quarters of the open-file limit, the rest kept for origins, the cache and logs.
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    let files = if ok && lim.rlim_cur != libc::RLIM_INFINITY { lim.rlim_cur as usize } else { 65_536 };
    (files / 4 * 3).max(16)
}

/// Requests in flight per client address.
#[derive(Default)]
pub(crate) struct ClientSlots {
    max: usize,
    /// foldhash, seeded per process: SipHash cost ~800 instructions per request here, and a
    /// client picks its address from few choices, so a faster keyed hash is enough.
    held: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
}

/// One request's place; released when the request's context is dropped.
pub(crate) struct ClientSlot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(ClientSlots { max, held: Mutex::new(HashMap::default()) })
    }

    /// None when the address already has `max` requests in flight.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot { slots: self.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, headers: &[(&str, String)]) -> RequestHeader {
        let mut h = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            h.append_header(k.to_string(), v.as_str()).unwrap();
        }
        h
    }

    #[test]
    fn each_limit_has_its_status() {
        let l = Limits { max_uri: crate::config::ByteSize(300), max_header_count: 3, ..Limits::default() };
        assert_eq!(check_head(&head("/ok", &[]), &l), Ok(()));
        assert_eq!(check_head(&head(&format!("/{}", "a".repeat(300)), &[]), &l).map_err(|e| e.status), Err(414));
        let many: Vec<_> = (0..4).map(|i| ("x-n", i.to_string())).collect();
        assert_eq!(check_head(&head("/", &many), &l).map_err(|e| e.status), Err(431));
        let big = [("x-big", "v".repeat(8 * 1024))];
        assert_eq!(check_head(&head("/", &big), &l).map_err(|e| e.status), Err(431));
        let several = [("x-a", "v".repeat(7000)), ("x-b", "v".repeat(7000)), ("x-c", "v".repeat(7000))];
        let l = Limits { max_headers: crate::config::ByteSize(20_000), ..Limits::default() };
        assert_eq!(check_head(&head("/", &several), &l).map_err(|e| e.status), Err(431));
    }

    #[test]
    fn a_slot_is_given_back_when_dropped() {
        let slots = ClientSlots::new(2);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let (a, b) = (slots.acquire(ip), slots.acquire(ip));
        assert!(a.is_some() && b.is_some() && slots.acquire(ip).is_none());
        assert!(slots.acquire("127.0.0.10".parse().unwrap()).is_some(), "per address");
        drop(a);
        assert!(slots.acquire(ip).is_some());
    }
}

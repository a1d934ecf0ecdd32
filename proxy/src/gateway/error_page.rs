//! The short answers Portier writes itself (no route, no upstream, timeouts): plain text that
//! names the request id, never cached.

use crate::cache::status::Outcome;
use bytes::Bytes;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

pub(crate) fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

pub(crate) fn body(status: u16, detail: &str, request_id: &str) -> String {
    format!("{status} {}: {detail} (request id {request_id})\n", reason(status))
}

pub(crate) fn detail_for(status: u16) -> &'static str {
    match status {
        504 => "the upstream did not answer in time",
        502 => "the upstream could not be reached or sent an invalid response",
        404 => "no route matches this request",
        400 => "the request is malformed",
        413 => "the request body is larger than this route accepts",
        401 => "this route needs a user name and password",
        403 => "this route does not accept requests from this address",
        _ => "the request failed",
    }
}

/// Writes the page unless a response has already started (then the connection is just closed).
/// `extra` fields go on the page too (`WWW-Authenticate` on a 401).
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    detail: &str,
    stamp: Stamp<'_>,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    let text = Bytes::from(body(status, detail, stamp.request_id.as_str()));
    write(session, status, Some("text/plain; charset=utf-8"), text, stamp, extra).await
}

/// What every answer Portier writes itself carries: the request id, and the cache status
/// headers of `outcome` under this cache's name (`server.name`).
#[derive(Clone, Copy)]
pub(crate) struct Stamp<'a> {
    pub request_id: &'a crate::edge::forwarding::RequestId,
    pub outcome: &'a Outcome,
    pub name: &'a str,
}

/// Any answer Portier writes itself (error pages, PURGE, `OPTIONS *`, ACME challenges): never
/// stored, with the request id and the cache status headers. Nothing is written once a
/// response has started.
pub(crate) async fn write(
    session: &mut Session,
    status: u16,
    content_type: Option<&str>,
    body: Bytes,
    stamp: Stamp<'_>,
    extra: &[(&'static str, &str)],
) -> Result<()> {
    if session.as_downstream().response_written().is_some() {
        return Ok(());
    }
    let mut resp = ResponseHeader::build(status, Some(9))?;
    if let Some(ct) = content_type {
        resp.insert_header("content-type", ct)?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(crate::edge::forwarding::REQUEST_ID, stamp.request_id.value())?;
    stamp.outcome.write_headers(&mut resp, None, stamp.name)?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    if body.is_empty() {
        return session.write_response_header(Box::new(resp), true).await;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Lingering close (RFC 9112 §9.6): after an answer sent before the request body was read,
/// the rest of the body is read and dropped, for a while, so that closing does not reset
/// the connection (a reset makes the client's kernel discard the answer it has not read).
pub(crate) async fn linger(session: &mut Session) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const AT_MOST: usize = 16 << 20;
    let downstream = session.as_downstream_mut();
    if downstream.is_body_done() {
        return;
    }
    let drain = async {
        let mut dropped = 0;
        while let Ok(Some(chunk)) = downstream.read_request_body().await {
            dropped += chunk.len();
            if dropped > AT_MOST {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

//! An answer Portier gives itself instead of forwarding the request (a refusal, a redirect,
//! `OPTIONS *`, PURGE's result): decided by a check as a value, written once by
//! [`State::answer`], which also names the request's span when no route did.

use super::{Ctx, State};
use crate::cache::status::{CacheDecision, LocalAnswer};
use crate::gateway::error_page;
use bytes::Bytes;
use pingora_error::Result;
use pingora_proxy::Session;
use std::borrow::Cow;

pub(super) struct Refusal {
    /// What the cache status says of it; `None` for a failed fill replayed to a waiter, whose
    /// status is the origin's failure (`origin_failure`).
    answer: Option<LocalAnswer>,
    status: u16,
    /// The error page's sentence (unused when `body` is set).
    detail: Cow<'static, str>,
    body: Option<(Option<&'static str>, Bytes)>,
    extra: Vec<(&'static str, String)>,
    /// The connection closes after the answer: the rest of the request may be unreadable.
    close: bool,
    /// The span's name after the method when no route named it: `GET (refused)`.
    unrouted: &'static str,
    origin_failure: Option<&'static str>,
}

impl Refusal {
    /// A text page: `status`, and the sentence saying why.
    pub(super) fn page(answer: LocalAnswer, status: u16, detail: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            answer: Some(answer),
            status,
            detail: detail.into(),
            body: None,
            extra: Vec::new(),
            close: false,
            unrouted: "(refused)",
            origin_failure: None,
        }
    }

    /// An answer with a body of its own (PURGE's JSON, an ACME key authorization).
    pub(super) fn with_body(answer: LocalAnswer, status: u16, content_type: Option<&'static str>, body: Bytes) -> Refusal {
        Refusal { body: Some((content_type, body)), ..Refusal::page(answer, status, "") }
    }

    /// A fill's failure, given at once to a client that waited on it.
    pub(super) fn failed_fill(status: u16, origin_failure: &'static str) -> Refusal {
        Refusal {
            answer: None,
            origin_failure: Some(origin_failure),
            close: true,
            ..Refusal::page(LocalAnswer::Refused, status, error_page::detail_for(status))
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.extra.push((name, value.into()));
        self
    }

    pub(super) fn closing(mut self) -> Refusal {
        self.close = true;
        self
    }

    pub(super) fn named(mut self, unrouted: &'static str) -> Refusal {
        self.unrouted = unrouted;
        self
    }
}

impl State {
    /// Writes a check's answer: the span named if no route named it, the cache status
    /// decided, the page with the cache headers every response gets.
    pub(super) async fn answer(&self, session: &mut Session, ctx: &mut Ctx, r: Refusal) -> Result<()> {
        if ctx.route.span_name.is_empty() {
            let mut name = String::with_capacity(ctx.request.method_label.len() + 1 + r.unrouted.len());
            name.push_str(ctx.request.method_label);
            name.push(' ');
            name.push_str(r.unrouted);
            self.start_trace(session, ctx, name);
        }
        if r.close {
            session.set_keepalive(None);
        }
        ctx.local_status = Some(r.status);
        let outcome = match (r.answer, r.origin_failure) {
            (_, Some(detail)) => self.outcome_with_error(session, ctx, detail),
            (Some(answer), None) => {
                ctx.cache.decision = CacheDecision::Answered(answer);
                self.outcome(session, ctx)
            }
            (None, None) => self.outcome(session, ctx),
        };
        let extra: Vec<(&'static str, &str)> = r.extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stamp = error_page::Stamp { request_id: &ctx.request.id, outcome: &outcome, name: self.config.server.name.as_str() };
        match r.body {
            Some((content_type, body)) => error_page::write(session, r.status, content_type, body, stamp, &extra).await,
            None => error_page::respond(session, r.status, &r.detail, stamp, &extra).await,
        }
    }
}

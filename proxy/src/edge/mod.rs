//! The request path's building blocks that know nothing of the cache or the gateway: the
//! canonical request target, access rules, limits, the fields added to forwarded requests,
//! compression and its dictionaries, TLS certificates chosen by SNI, ACME's HTTP-01 answers.

pub(crate) mod access;
pub(crate) mod challenges;
pub(crate) mod compression;
pub(crate) mod dictionary;
pub(crate) mod fields;
pub(crate) mod forwarding;
pub(crate) mod limits;
pub(crate) mod target;
pub(crate) mod tls;

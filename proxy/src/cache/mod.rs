//! The edge cache: storage, policy, status headers, conditional requests, invalidation, purge.

pub mod directives;
pub mod policy;
pub mod storage;

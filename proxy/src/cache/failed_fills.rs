//! Fills whose origin just failed, so the clients that were coalesced on them are answered
//! at once instead of each trying the origin in turn. Pingora releases a failed fill's lock
//! as a transient error: every waiter competes again, and the new writer waits for the origin
//! again, so with an origin that does not answer the last of ten clients got its 504 after
//! four read timeouts (4 s with `read = "1s"`, 2 minutes with the default 30 s).

use pingora_cache::key::HashBinary;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failure answers the clients that were waiting on it. Long enough for the
/// waiters of one fill to wake and be answered; a client arriving later tries the origin.
const REMEMBERED: Duration = Duration::from_secs(2);
/// Bound on remembered failures (an outage across many URLs).
const AT_MOST: usize = 10_000;

/// A failed fill: the status its clients got and the `Cache-Status` detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: u16,
    pub(crate) detail: &'static str,
}

#[derive(Default)]
pub(crate) struct FailedFills {
    recent: Mutex<HashMap<HashBinary, (Instant, Failure)>>,
}

impl FailedFills {
    pub(crate) fn record(&self, key: HashBinary, failure: Failure) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= AT_MOST {
            recent.retain(|_, (at, _)| now.duration_since(*at) < REMEMBERED);
            if recent.len() >= AT_MOST {
                return;
            }
        }
        recent.insert(key, (now, failure));
    }

    /// The failure a client that waited on this key's fill should be answered with.
    pub(crate) fn recent(&self, key: &HashBinary) -> Option<Failure> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.get(key).filter(|(at, _)| at.elapsed() < REMEMBERED).map(|(_, f)| *f)
    }

    /// A fill of this key succeeded: nothing to answer with any more.
    pub(crate) fn clear(&self, key: &HashBinary) {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_then_cleared() {
        let f = FailedFills::default();
        let (k, other) = ([1u8; 16], [2u8; 16]);
        let failure = Failure { status: 504, detail: "origin-timeout" };
        f.record(k, failure);
        assert_eq!(f.recent(&k), Some(failure));
        assert_eq!(f.recent(&other), None);
        f.clear(&k);
        assert_eq!(f.recent(&k), None);
    }
}

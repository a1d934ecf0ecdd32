//! ACME HTTP-01 answers the request path serves while `crate::control::acme` obtains a
//! certificate.

use parking_lot::Mutex;
use std::collections::HashMap;

/// The path CAs fetch HTTP-01 answers from.
pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending HTTP-01 answers: token → key authorization.
#[derive(Default)]
pub(crate) struct Challenges(Mutex<HashMap<String, String>>);

impl Challenges {
    /// An answer to serve until [`Self::withdraw`].
    pub(crate) fn offer(&self, token: String, key_authorization: String) {
        self.0.lock().insert(token, key_authorization);
    }

    pub(crate) fn withdraw(&self, token: &str) {
        self.0.lock().remove(token);
    }

    /// The answer for a request path, when it is a pending challenge.
    pub(crate) fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        self.0.lock().get(token).cloned()
    }
}

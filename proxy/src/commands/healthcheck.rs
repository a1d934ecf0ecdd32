//! `portier healthcheck`: exit 0 when the admin `/healthz` answers 200 (container health
//! checks need no curl).

use super::fail;
use std::process::ExitCode;

pub(super) fn command(admin: &str) -> ExitCode {
    match healthcheck(admin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("unhealthy: {e}")),
    }
}

/// `GET /healthz` on the admin listener, with a short timeout.
fn healthcheck(admin: &str) -> Result<(), String> {
    use crate::http_client::{send_blocking, Request};
    let req = Request { method: "GET", target: "/healthz", host: admin, headers: &[], body: b"" };
    let head = send_blocking(admin, &req, std::time::Duration::from_secs(2)).map_err(|e| format!("{admin}: {e}"))?;
    if head.status == 200 {
        Ok(())
    } else {
        Err(format!("{admin}/healthz answered {}", head.status))
    }
}

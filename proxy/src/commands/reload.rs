//! `portier reload`: asks the running Portier to read its file again (as SIGHUP does).

use super::fail;
use std::process::ExitCode;

pub(super) fn command(admin: &str, token: Option<&str>) -> ExitCode {
    match reload(admin, token) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `POST /config/reload` on the admin listener.
fn reload(admin: &str, token: Option<&str>) -> Result<String, String> {
    use crate::http_client::{send_blocking, Request};
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let req = Request { method: "POST", target: "/config/reload", host: admin, headers: &headers, body: b"" };
    let resp = send_blocking(admin, &req, std::time::Duration::from_secs(30)).map_err(|e| format!("{admin}: {e}"))?;
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    match (resp.status, body["restart_needed_for"].as_array()) {
        (200, Some(kept)) if kept.is_empty() => Ok("reloaded".into()),
        (200, Some(kept)) => {
            let keys: Vec<&str> = kept.iter().filter_map(|k| k.as_str()).collect();
            Ok(format!("reloaded; these keep their running value until a restart: {}", keys.join(", ")))
        }
        (status, _) => Err(format!("reload refused ({status}): {}", body["error"].as_str().unwrap_or("no reason given"))),
    }
}

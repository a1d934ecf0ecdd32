//! HTTPS: certificates from PEM files, chosen by SNI, reloaded on SIGHUP without a restart.
//! Pingora's rustls listener asks [`CertStore`] for a certificate on every handshake.

use crate::config::{CertificateFiles, TlsConfig};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) use crate::config::certs::{load_pair, loaded_from_pem, Loaded, TlsError};

fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        // A wildcard covers one label: `a.example.com`, not `example.com` or `a.b.example.com`.
        Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The certificates being served; swapped whole on reload.
#[derive(Debug)]
pub(crate) struct CertStore {
    current: ArcSwap<Vec<(Vec<String>, Arc<CertifiedKey>)>>,
    files: Vec<CertificateFiles>,
    /// The ACME certificate (or its placeholder), kept apart from the files SIGHUP reloads.
    managed: arc_swap::ArcSwapOption<(Vec<String>, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Loads every certificate; returns the store and each certificate's names and days left.
    pub(crate) fn load(cfg: &TlsConfig) -> Result<(CertStore, Vec<(String, u64)>), TlsError> {
        let store = CertStore { current: ArcSwap::from_pointee(Vec::new()), files: cfg.certificates.clone(), managed: Default::default() };
        let summary = store.reload()?;
        Ok((store, summary))
    }

    /// Reads every file again; on any error the certificates being served stay. Returns
    /// each certificate's names and days left.
    pub(crate) fn reload(&self) -> Result<Vec<(String, u64)>, TlsError> {
        let loaded = self.files.iter().map(load_pair).collect::<Result<Vec<_>, _>>()?;
        let now = SystemTime::now();
        let summary =
            loaded.iter().map(|l| (l.names.join(" "), l.not_after.duration_since(now).unwrap_or_default().as_secs() / 86_400)).collect();
        self.current.store(Arc::new(loaded.into_iter().map(|l| (l.names, l.key)).collect()));
        Ok(summary)
    }

    /// Serves this certificate for its names (and when nothing else matches), replacing the
    /// previous one.
    pub(crate) fn set_managed(&self, l: Loaded) {
        self.managed.store(Some(Arc::new((l.names, l.key))));
    }

    /// Reads the certificate files again and says what was loaded, or why not.
    pub(crate) fn reload_announced(&self) {
        match self.reload() {
            Ok(certs) => announce(&certs, "tls_certificates_reloaded"),
            Err(e) => crate::telemetry::events::emit("warn", "tls_reload_failed", &[("error", &e.to_string())]),
        }
    }
}

/// One event per certificate: the names it covers and the days it has left.
pub(crate) fn announce(certs: &[(String, u64)], event: &str) {
    for (names, days) in certs {
        crate::telemetry::events::emit("info", event, &[("names", names), ("days_left", &days.to_string())]);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current.load();
        let managed = self.managed.load();
        let all = managed.iter().map(|m| &**m).chain(certs.iter());
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let matching = sni.and_then(|host| all.clone().find(|(names, _)| names.iter().any(|n| covers(n, &host))));
        let mut all = all;
        matching.or_else(|| all.next()).map(|(_, k)| k.clone())
    }
}

/// `Alt-Svc` naming the HTTP/3 port (RFC 7838 §3, RFC 9114 §3.1.1): a day's `ma`, as Caddy
/// sends, so a browser that learnt it once tries QUIC first on its next visits.
pub(crate) fn alt_svc(t: &TlsConfig) -> Option<http::HeaderValue> {
    if !t.http3 {
        return None;
    }
    let port = t.http3_port.map_or(t.listen.0.port(), |p| p.get());
    http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(covers("grafana.example.com", "grafana.example.com"));
    }

    #[test]
    fn pairs_are_checked_before_they_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let a = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".into()]).unwrap();
        let cert = write("a.pem", &a.cert.pem());
        let key = write("a.key", &a.signing_key.serialize_pem());
        let other_key = write("b.key", &b.signing_key.serialize_pem());
        let ok = load_pair(&CertificateFiles { cert: cert.clone(), key: key.clone() }).unwrap();
        assert_eq!(ok.names, vec!["a.test".to_string()]);
        let mismatch = load_pair(&CertificateFiles { cert: cert.clone(), key: other_key }).unwrap_err();
        assert!(matches!(mismatch, TlsError::KeyMismatch { .. }), "{mismatch}");
        let missing = load_pair(&CertificateFiles { cert: dir.path().join("nope.pem"), key }).unwrap_err();
        assert!(missing.to_string().contains("nope.pem: cannot read"), "{missing}");
        let empty = write("empty.pem", "");
        assert!(matches!(load_pair(&CertificateFiles { cert: empty, key: cert }).unwrap_err(), TlsError::NoCertificate { .. }));
    }
}

//! HTTPS: certificates from PEM files, chosen by SNI, reloaded on SIGHUP without a restart.
//! Pingora's rustls listener asks [`CertStore`] for a certificate on every handshake.

use crate::config::{CertificateFiles, TlsConfig};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("{path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: String },
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    BadCertificate { path: String, reason: String },
    #[error("{path}: the private key does not go with the certificate ({reason})")]
    KeyMismatch { path: String, reason: String },
    #[error("{path}: the certificate expired {days} days ago")]
    Expired { path: String, days: u64 },
}

/// One loaded certificate: its key, the names it covers, when it expires.
#[derive(Debug)]
pub(crate) struct Loaded {
    key: Arc<CertifiedKey>,
    /// DNS names from the subject alternative names (lower-case; `*.example.com` wildcards).
    names: Vec<String>,
    pub(crate) not_after: SystemTime,
}

/// Reads a certificate chain and its key, and checks they belong together and are in date.
pub(crate) fn load_pair(files: &CertificateFiles) -> Result<Loaded, TlsError> {
    let show = |p: &Path| p.display().to_string();
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Read { path: show(p), reason: e.to_string() });
    parse(&read(&files.cert)?, &read(&files.key)?, &show(&files.cert), &show(&files.key))
}

/// [`load_pair`] for PEM already in memory (ACME answers, placeholders).
pub(crate) fn loaded_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, TlsError> {
    parse(cert_pem, key_pem, "certificate", "key")
}

fn parse(cert_pem: &[u8], key_pem: &[u8], cert_name: &str, key_name: &str) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate { path: cert_name.to_string() })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::BadCertificate { path: cert_name.to_string(), reason: e.to_string() })?;
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    if let Ok(ago) = SystemTime::now().duration_since(not_after) {
        return Err(TlsError::Expired { path: cert_name.to_string(), days: ago.as_secs() / 86_400 });
    }
    let mut names: Vec<String> = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.dedup();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Read { path: key_name.to_string(), reason: e.to_string() })?;
    let certified = CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| TlsError::KeyMismatch { path: key_name.to_string(), reason: e.to_string() })?;
    Ok(Loaded { key: Arc::new(certified), names, not_after })
}

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

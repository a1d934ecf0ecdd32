//! The certificate files `[tls]` names, read and checked (chain, key, dates) where the
//! config is loaded, so a broken pair is a config error with its key path; `crate::edge::tls` serves
//! what this loads.

use super::CertificateFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names from the subject alternative names (lower-case; `*.example.com` wildcards).
    pub(crate) names: Vec<String>,
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

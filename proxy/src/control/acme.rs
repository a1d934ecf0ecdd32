//! Certificates by ACME (RFC 8555, the `instant-acme` client): HTTP-01 answered by Portier's
//! own public listener, the certificate and account kept on disk so a restart serves at once,
//! renewed ahead of expiry. Until the first certificate arrives, HTTPS serves a self-signed
//! placeholder: startup never waits on the CA.

use crate::config::AcmeConfig;
use crate::edge::tls::CertStore;
use crate::telemetry::events;
use instant_acme::{Account, AccountCredentials, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(crate) use crate::edge::challenges::Challenges;

fn files(cfg: &AcmeConfig) -> (PathBuf, PathBuf, PathBuf) {
    (cfg.storage.join("cert.pem"), cfg.storage.join("key.pem"), cfg.storage.join("account.json"))
}

/// Serves the stored certificate if there is one, a placeholder otherwise, and keeps a valid
/// certificate in `store` for the life of the process.
pub(crate) fn start(cfg: AcmeConfig, store: Arc<CertStore>, challenges: Arc<Challenges>) {
    let (cert, key, _) = files(&cfg);
    match crate::edge::tls::load_pair(&crate::config::CertificateFiles { cert, key }) {
        Ok(loaded) => {
            events::emit("info", "acme_certificate_loaded", &[("domains", &cfg.domains.join(" "))]);
            store.set_managed(loaded);
        }
        Err(_) => {
            if let Ok(placeholder) = placeholder(&cfg.domains) {
                store.set_managed(placeholder);
            }
        }
    }
    let spawned = std::thread::Builder::new().name("acme".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(keep_valid(cfg, store, challenges));
    });
    if let Err(e) = spawned {
        events::emit("warn", "acme_unavailable", &[("error", &e.to_string())]);
    }
}

/// A self-signed certificate for the domains, served until the CA's arrives.
fn placeholder(domains: &[String]) -> Result<crate::edge::tls::Loaded, String> {
    let c = rcgen::generate_simple_self_signed(domains.to_vec()).map_err(|e| e.to_string())?;
    crate::edge::tls::loaded_from_pem(c.cert.pem().as_bytes(), c.signing_key.serialize_pem().as_bytes()).map_err(|e| e.to_string())
}

async fn keep_valid(cfg: AcmeConfig, store: Arc<CertStore>, challenges: Arc<Challenges>) {
    let mut backoff = Duration::from_secs(2);
    loop {
        let (cert, key, _) = files(&cfg);
        let left = crate::edge::tls::load_pair(&crate::config::CertificateFiles { cert, key })
            .ok()
            .and_then(|l| l.not_after.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let wait = if left > cfg.renew_before.get() {
            backoff = Duration::from_secs(2);
            (left - cfg.renew_before.get()).min(Duration::from_secs(12 * 3600))
        } else {
            match obtain(&cfg, &challenges).await {
                Ok(loaded) => {
                    events::emit("info", "acme_certificate_issued", &[("domains", &cfg.domains.join(" "))]);
                    store.set_managed(loaded);
                    backoff = Duration::from_secs(2);
                    continue;
                }
                Err(e) => {
                    events::emit("warn", "acme_failed", &[("error", &e), ("retry_in", &format!("{backoff:?}"))]);
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(3600));
                    w
                }
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn account(cfg: &AcmeConfig) -> Result<Account, String> {
    let (_, _, account_file) = files(cfg);
    let builder = || match &cfg.directory_ca {
        Some(ca) => Account::builder_with_root(ca).map_err(|e| format!("{}: {e}", ca.display())),
        None => Account::builder().map_err(|e| e.to_string()),
    };
    if let Ok(text) = std::fs::read(&account_file) {
        if let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&text) {
            return builder()?.from_credentials(creds).await.map_err(|e| e.to_string());
        }
    }
    let contact = format!("mailto:{}", cfg.email);
    let (account, creds) = builder()?
        .create(
            &NewAccount { contact: &[&contact], terms_of_service_agreed: true, only_return_existing: false },
            cfg.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("account: {e}"))?;
    std::fs::create_dir_all(&cfg.storage).map_err(|e| format!("{}: {e}", cfg.storage.display()))?;
    let text = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_private(&account_file, &text)?;
    Ok(account)
}

/// Files holding keys are readable by Portier's user only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // Renamed into place, so a crash never leaves half a key.
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

async fn obtain(cfg: &AcmeConfig, challenges: &Challenges) -> Result<crate::edge::tls::Loaded, String> {
    let account = account(cfg).await?;
    let ids: Vec<Identifier> = cfg.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("order: {e}"))?;
    let mut tokens = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        if authz.status == instant_acme::AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or("the CA offers no http-01 challenge")?;
        let token = challenge.token.clone();
        challenges.offer(token.clone(), challenge.key_authorization().as_str().to_string());
        tokens.push(token);
        challenge.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
    }
    let status = order.poll_ready(&RetryPolicy::default()).await;
    for t in &tokens {
        challenges.withdraw(t);
    }
    let status = status.map_err(|e| format!("validation: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!("order is {status:?}, not ready"));
    }
    let key_pem = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
    let chain_pem = order.poll_certificate(&RetryPolicy::default()).await.map_err(|e| format!("certificate: {e}"))?;
    let loaded = crate::edge::tls::loaded_from_pem(chain_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let (cert, key, _) = files(cfg);
    std::fs::create_dir_all(&cfg.storage).map_err(|e| format!("{}: {e}", cfg.storage.display()))?;
    write_private(&key, key_pem.as_bytes())?;
    write_private(&cert, chain_pem.as_bytes())?;
    Ok(loaded)
}

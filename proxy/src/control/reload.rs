//! Configuration reload, by `SIGHUP`, the admin API's `POST /config/reload` or
//! `portier reload`. The file is read and checked again: a valid one replaces routes, pools,
//! cache rules, access rules and limits for the requests that start afterwards (a request in
//! flight keeps the state it started with), while connections and the cache's contents stay;
//! an invalid one is refused with every problem, and the running configuration stays.
//!
//! What is bound or sized at start-up (listeners, threads, TLS listener, cache sizes, the
//! head timeout and connection limit inside Pingora, telemetry exporters) keeps its running
//! value; the reload names those keys so the operator knows a restart is needed for them.

use crate::config::Config;
use crate::gateway::State;
use crate::telemetry::events;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("started without a configuration file (portier proxy): nothing to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
}

pub(crate) struct Reloader {
    source: Option<PathBuf>,
    live: Arc<ArcSwap<State>>,
    certs: Option<Arc<crate::edge::tls::CertStore>>,
    /// Wakes the health-check service so it checks the new pools.
    pub(crate) swapped: tokio::sync::Notify,
    one_at_a_time: Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(source: Option<PathBuf>, live: Arc<ArcSwap<State>>, certs: Option<Arc<crate::edge::tls::CertStore>>) -> Self {
        Reloader { source, live, certs, swapped: tokio::sync::Notify::new(), one_at_a_time: Mutex::new(()) }
    }

    /// Swaps in the file's configuration; `Ok` lists the changed keys that keep their running
    /// value until a restart.
    pub(crate) fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.swap();
        match &result {
            Ok(kept) => events::emit("info", "config_reloaded", &[("restart_needed_for", &kept.join(","))]),
            Err(e) => events::emit("warn", "config_reload_refused", &[("error", &e.to_string())]),
        }
        result
    }

    fn swap(&self) -> Result<Vec<&'static str>, ReloadError> {
        let path = self.source.as_ref().ok_or(ReloadError::NoFile)?;
        let mut config = crate::config::load_file(path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let old = self.live.load_full();
        let kept = keep_what_needs_a_restart(&old.config, &mut config);
        let upstreams = Arc::new(old.upstreams.reconfigured(&config)?);
        self.live.store(Arc::new(old.reconfigured(config, upstreams)));
        self.swapped.notify_one();
        Ok(kept)
    }

    /// SIGHUP: the configuration, then the certificate files.
    pub(crate) fn reload_on_sighup(self: Arc<Self>) {
        let spawned = std::thread::Builder::new().name("reload".into()).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
                while hup.recv().await.is_some() {
                    let _ = self.reload();
                    if let Some(store) = &self.certs {
                        store.reload_announced();
                    }
                }
            });
        });
        if let Err(e) = spawned {
            events::emit("warn", "reload_unavailable", &[("error", &e.to_string())]);
        }
    }
}

/// Keys that only take effect at start-up get their running value back in `new`; the ones
/// that differed are returned.
fn keep_what_needs_a_restart(old: &Config, new: &mut Config) -> Vec<&'static str> {
    fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }
    // The TLS listener's `:0` was replaced by the port actually bound.
    if let (Some(o), Some(n)) = (&old.tls, &mut new.tls) {
        if n.listen.0.port() == 0 {
            n.listen = o.listen;
        }
    }
    let mut kept = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:ident).+) => {
            if !same(&old.$($field).+, &new.$($field).+) {
                kept.push($key);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!("listen.public", listen.public);
    keep!("listen.admin", listen.admin);
    keep!("server.threads", server.threads);
    keep!("server.grace_period", server.grace_period);
    keep!("limits.head_timeout", limits.head_timeout);
    keep!("limits.handshake_timeout", limits.handshake_timeout);
    keep!("limits.body_timeout", limits.body_timeout);
    keep!("limits.min_body_rate", limits.min_body_rate);
    keep!("limits.max_connections", limits.max_connections);
    keep!("limits.quic_retry_above", limits.quic_retry_above);
    // The store is built once per process (its memory is the process's for good): turning the
    // cache off and on again by reload would leak one and start a second shared-tier thread.
    keep!("cache.enabled", cache.enabled);
    keep!("cache.max_size", cache.max_size);
    keep!("cache.max_object_size", cache.max_object_size);
    keep!("cache.lock_timeout", cache.lock_timeout);
    keep!("cache.shared", cache.shared);
    keep!("cache.disk", cache.disk);
    keep!("tls", tls);
    keep!("telemetry", telemetry);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_keys_keep_their_running_value_and_are_named() {
        let load = |text: &str| crate::config::load_str(text, "test.toml", |_| None).unwrap();
        let old = load("[upstreams.a]\naddresses = [\"127.0.0.1:1\"]\n[[routes]]\npath = \"/*\"\npool = \"a\"\n");
        let mut new = load(
            "[listen]\npublic = \"127.0.0.1:9\"\n[cache]\nenabled = false\nmax_size = \"16MiB\"\n[upstreams.a]\naddresses = [\"127.0.0.1:2\"]\n[[routes]]\npath = \"/x/*\"\npool = \"a\"\n",
        );
        let kept = keep_what_needs_a_restart(&old, &mut new);
        assert_eq!(kept, ["listen.public", "cache.enabled", "cache.max_size"]);
        assert_eq!((new.listen.public.0, new.cache.max_size, new.cache.enabled), (old.listen.public.0, old.cache.max_size, true));
        assert_eq!(new.routes[0].path.to_string(), "/x/*", "routes change");
        assert_eq!(new.upstreams["a"].addresses[0].to_string(), "127.0.0.1:2", "pools change");
    }
}

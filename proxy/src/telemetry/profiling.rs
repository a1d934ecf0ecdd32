//! CPU profiles with the `pprof` crate: continuous push to Pyroscope (application name = the
//! service name) when a server is configured, and on-demand
//! `GET /debug/pprof/profile?seconds=N` on the admin listener returning a pprof protobuf.
//! Both use the process's one SIGPROF profiler, so only one runs at a time.
//!
//! The push speaks Pyroscope's `push.v1.PusherService/Push` (Connect protocol, protobuf
//! body) directly: the `pyroscope` crate vendors its own copy of pprof-rs, whose signal
//! handler symbol clashes with the `pprof` crate's at link time.

use pprof::protos::Message as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const MAX_SECONDS: u64 = 300;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("a profile is already being taken")]
    Busy,
    #[error("continuous profiling to Pyroscope owns the profiler; look at Pyroscope instead")]
    PushActive,
    #[error("profiling failed: {0}")]
    Failed(String),
    #[error("the client went away; profiling stopped")]
    Abandoned,
    #[error("telemetry.profiling.pyroscope_url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// Pyroscope's push API messages (`push/v1/push.proto`).
mod push_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RawProfileSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<RawSample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RawSample {
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
        #[prost(string, tag = "2")]
        pub id: String,
    }
}

/// Takes one CPU profile of `duration` (blocking) and returns it as pprof protobuf bytes.
/// Samples for `duration`, or until `stop` says (or is dropped): then nothing is reported.
fn take_profile(duration: Duration, stop: std::sync::mpsc::Receiver<()>) -> Result<Vec<u8>, ProfileError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(100)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    if !matches!(stop.recv_timeout(duration), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
        return Err(ProfileError::Abandoned);
    }
    let report = guard.report().build().map_err(|e| ProfileError::Failed(e.to_string()))?;
    drop(guard);
    let profile = report.pprof().map_err(|e| ProfileError::Failed(e.to_string()))?;
    Ok(profile.encode_to_vec())
}

/// `http://host:port/prefix` → (`host:port`, `/prefix`). Only plain HTTP: Pyroscope sits on
/// the internal network next to Portier.
pub(crate) fn parse_http_url(url: &str) -> Result<(String, String), ProfileError> {
    let bad = |reason: &str| ProfileError::BadUrl { url: url.to_string(), reason: reason.to_string() };
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// is supported"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let host = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
    Ok((host, path.trim_end_matches('/').to_string()))
}

fn post(host: &str, path: &str, content_type: &str, body: &[u8]) -> std::io::Result<u16> {
    let headers = [("Content-Type", content_type), ("Connect-Protocol-Version", "1")];
    let req = crate::http_client::Request { method: "POST", target: path, host, headers: &headers, body };
    crate::http_client::send_blocking(host, &req, Duration::from_secs(5)).map(|h| h.status)
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ProfileCounters {
    pub pushed: AtomicU64,
    pub failed: AtomicU64,
}

pub(crate) struct Profiling {
    busy: Arc<AtomicBool>,
    pushing: Arc<AtomicBool>,
    pub counters: Arc<ProfileCounters>,
}

impl Profiling {
    pub(crate) fn new() -> Profiling {
        Profiling { busy: Arc::new(AtomicBool::new(false)), pushing: Arc::new(AtomicBool::new(false)), counters: Arc::default() }
    }

    /// Profiles continuously in `interval` windows on a thread of its own and pushes each
    /// window to Pyroscope; a failed push is counted and the next window goes on.
    pub(crate) fn start_push(&self, url: &str, service_name: &str, interval: Duration) -> Result<(), ProfileError> {
        let (host, prefix) = parse_http_url(url)?;
        let path = format!("{prefix}/push.v1.PusherService/Push");
        let (pushing, counters, service) = (self.pushing.clone(), self.counters.clone(), service_name.to_string());
        pushing.store(true, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("pyroscope-push".into())
            .spawn(move || {
                let mut n = 0u64;
                // One series per window and profile type; a failed push is counted, no retry.
                let push = |name: &str, raw: Vec<u8>, id: String| {
                    let req = push_proto::PushRequest {
                        series: vec![push_proto::RawProfileSeries {
                            labels: [("__name__", name), ("service_name", service.as_str()), ("__delta__", "false")]
                                .iter()
                                .map(|(k, v)| push_proto::LabelPair { name: k.to_string(), value: v.to_string() })
                                .collect(),
                            samples: vec![push_proto::RawSample { raw_profile: raw, id }],
                        }],
                    };
                    let ok = matches!(post(&host, &path, "application/proto", &prost::Message::encode_to_vec(&req)), Ok(200..=299));
                    let c = if ok { &counters.pushed } else { &counters.failed };
                    c.fetch_add(1, Ordering::Relaxed);
                };
                while pushing.load(Ordering::SeqCst) {
                    // Nothing stops a pushed profile early: the sender is held, never used.
                    let (_held, never) = std::sync::mpsc::channel();
                    n += 1;
                    match take_profile(interval, never) {
                        Ok(raw) => push("process_cpu", raw, format!("{n}")),
                        Err(_) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Then the allocations: Pyroscope's "memory" profile type, in-use space.
                    if let Ok(raw) = Profiling::heap_profile() {
                        push("memory", raw, format!("heap-{n}"));
                    }
                }
            })
            .map_err(|e| ProfileError::Failed(format!("cannot start the push thread: {e}")))?;
        Ok(())
    }

    /// What the heap holds now, as sampled by jemalloc: a gzipped pprof protobuf
    /// (`inuse_space`, bytes), symbolized. Fails when the allocator is not jemalloc with
    /// profiling (the unit tests' default allocator).
    pub(crate) fn heap_profile() -> Result<Vec<u8>, ProfileError> {
        let ctl = jemalloc_pprof::PROF_CTL
            .as_ref()
            .ok_or_else(|| ProfileError::Failed("heap profiling is off (the allocator is not jemalloc with prof:true)".into()))?;
        let mut ctl = ctl.blocking_lock();
        ctl.dump_pprof().map_err(|e| ProfileError::Failed(format!("heap profile: {e}")))
    }

    pub(crate) fn push_active(&self) -> bool {
        self.pushing.load(Ordering::SeqCst)
    }

    /// Samples the whole process at 100 Hz for `seconds` (1 to 300), as a pprof protobuf.
    /// A CPU profile of `seconds`, cut short (and the profiler freed for others) as soon as
    /// `client_gone` completes.
    pub(crate) async fn cpu_profile(
        &self,
        seconds: u64,
        client_gone: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<u8>, ProfileError> {
        if self.push_active() {
            return Err(ProfileError::PushActive);
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(ProfileError::Busy);
        }
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let _release = Release(&self.busy);
        let secs = seconds.clamp(1, MAX_SECONDS);
        let (stop, stopped) = std::sync::mpsc::channel();
        // The profiler guard is not Send: it lives on a blocking thread for the duration.
        let mut sampling = tokio::task::spawn_blocking(move || take_profile(Duration::from_secs(secs), stopped));
        let finished = tokio::select! {
            r = &mut sampling => Some(r),
            _ = client_gone => None,
        };
        let result = match finished {
            Some(r) => r,
            None => {
                let _ = stop.send(());
                sampling.await
            }
        };
        result.unwrap_or_else(|e| Err(ProfileError::Failed(e.to_string())))
    }
}

impl Default for Profiling {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_http_url("http://pyroscope:4040").unwrap(), ("pyroscope:4040".into(), "".into()));
        assert_eq!(parse_http_url("http://p/x/").unwrap(), ("p:80".into(), "/x".into()));
        assert!(parse_http_url("https://p").is_err());
    }
}

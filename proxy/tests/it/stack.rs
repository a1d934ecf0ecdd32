//! The stack around Portier (deploy/ and observability/), tested here without a Docker
//! engine: every YAML and JSON parses, Compose files match the Compose Specification schema,
//! the Dockerfile's paths exist, promtool accepts the Prometheus config, the dashboards are
//! valid Grafana models; then a real Prometheus scrapes `portier demo` under real k6 load,
//! k6's thresholds pass, every dashboard query naming a Portier series returns data, and the
//! CSV script turns k6's JSON output into the runbook's CSV.

use crate::common::prom::{query_result, start_prometheus, which};
use crate::common::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if e.is_dir() {
            files(&e, exts, out);
        } else if e.extension().and_then(|x| x.to_str()).is_some_and(|x| exts.contains(&x)) {
            out.push(e);
        }
    }
}

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let mut fs = Vec::new();
    files(&root().join("observability/grafana/provisioning/dashboards"), &["json"], &mut fs);
    fs.sort();
    fs.into_iter().map(|f| (f.clone(), serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap())).collect()
}

#[test]
fn every_yaml_and_json_parses_and_compose_files_match_the_schema() {
    let mut fs = Vec::new();
    for d in ["deploy", "observability", "config"] {
        files(&root().join(d), &["yml", "yaml", "json"], &mut fs);
    }
    assert!(fs.len() >= 15, "{fs:?}");
    for f in &fs {
        let text = std::fs::read_to_string(f).unwrap();
        if f.extension().unwrap() == "json" {
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        } else {
            yaml_serde::from_str::<yaml_serde::Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
bad = 0
for f in sys.argv[2:]:
    doc = yaml.safe_load(open(f))
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        bad += 1
        print(f"{f}: {'/'.join(map(str, e.path))}: {e.message}")
sys.exit(1 if bad else 0)
"#;
    let compose: Vec<String> =
        ["docker-compose.yml", "docker-compose.prod.yml", "docker-compose.observability.yml", "docker-compose.scale.yml"]
            .iter()
            .map(|f| root().join("deploy").join(f).display().to_string())
            .collect();
    let out = Command::new(which("python3"))
        .arg("-c")
        .arg(script)
        .arg(root().join("deploy/schema/compose-spec.json"))
        .args(&compose)
        .output()
        .expect("python3 runs (make test installs pyyaml and jsonschema)");
    assert!(out.status.success(), "Compose schema: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // The runbook's rules: only Grafana has a host port (127.0.0.1), all under the profile,
    // every image pinned to a version.
    let obs: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(&compose[2]).unwrap()).unwrap();
    for (name, svc) in obs["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert_eq!(svc["profiles"][0].as_str(), Some("observability"), "{name}");
        let image = svc["image"].as_str().unwrap();
        assert!(image.contains(':') && !image.ends_with(":latest"), "{name}: pinned image, got {image}");
        match name {
            "grafana" => assert_eq!(svc["ports"][0].as_str(), Some("127.0.0.1:3000:3000")),
            _ => assert!(svc.get("ports").is_none(), "{name} publishes no host port"),
        }
    }
    // Scaling out: three replicas on one Redis, the front starts once they answer.
    let mut scale: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(&compose[3]).unwrap()).unwrap();
    scale.apply_merge().unwrap();
    let services = &scale["services"];
    for r in ["proxy-1", "proxy-2", "proxy-3"] {
        assert_eq!(services[r]["environment"]["PORTIER_CACHE_SHARED_URL"].as_str(), Some("redis://redis:6379/0"), "{r}");
        assert_eq!(services[r]["depends_on"]["redis"]["condition"].as_str(), Some("service_healthy"), "{r}");
        assert_eq!(services["proxy"]["depends_on"][r]["condition"].as_str(), Some("service_healthy"), "{r}");
    }
    assert_eq!(services["proxy"]["environment"]["PORTIER_UPSTREAM_REPLICAS"].as_str(), Some("proxy-1:8080,proxy-2:8080,proxy-3:8080"));
    assert!(services["redis"]["healthcheck"]["test"].as_sequence().is_some());
    let dev: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(&compose[0]).unwrap()).unwrap();
    assert_eq!(dev["services"]["proxy"]["ports"][0].as_str(), Some("8080:8080"));
    assert_eq!(dev["services"]["proxy"]["environment"]["PORTIER_UPSTREAM_API"].as_str(), Some("api:3001"));
    assert_eq!(dev["services"]["proxy"]["environment"]["PORTIER_UPSTREAM_WEB"].as_str(), Some("web:5173"));
}

/// The supported layout (deploy/README.md): the application repository's root with its
/// `apps/*` and `.env`, plus Portier's `deploy/`, `config/` and `observability/` copied in.
/// Every path a Compose file names must resolve there; paths under `apps/` are the app's own
/// (the skeleton stands for them), everything else must come from the copied folders.
#[test]
fn compose_paths_resolve_in_the_supported_layout() {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().map(|e| e.unwrap()) {
            let target = to.join(e.file_name());
            if e.path().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let app = tempfile::tempdir().unwrap();
    for dir in ["deploy", "config", "observability"] {
        copy(&root().join(dir), &app.path().join(dir));
    }
    for a in ["api", "web", "landing"] {
        std::fs::create_dir_all(app.path().join("apps").join(a)).unwrap();
        std::fs::write(app.path().join("apps").join(a).join("Dockerfile"), "FROM node:20\n").unwrap();
    }
    std::fs::write(app.path().join(".env"), "GRAFANA_ADMIN_USER=admin\n").unwrap();
    // The runbook's own dashboard, which must stay visible next to Portier's.
    let app_dashboards = app.path().join("apps/observability/grafana/provisioning/dashboards/json");
    std::fs::create_dir_all(&app_dashboards).unwrap();
    std::fs::write(app_dashboards.join("api-runtime-overview.json"), r#"{"title":"API Runtime Overview"}"#).unwrap();
    let deploy = app.path().join("deploy");
    let resolve = |p: &str| -> PathBuf {
        let mut out = deploy.clone();
        for part in Path::new(p).components() {
            match part {
                std::path::Component::ParentDir => assert!(out.pop(), "{p} leaves the layout"),
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        assert!(out.starts_with(app.path()), "{p} points outside the application repository");
        out
    };
    let prod: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(deploy.join("docker-compose.prod.yml")).unwrap()).unwrap();
    let mut checked = 0;
    for f in ["docker-compose.yml", "docker-compose.prod.yml", "docker-compose.observability.yml", "docker-compose.scale.yml"] {
        let mut doc: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(deploy.join(f)).unwrap()).unwrap();
        doc.apply_merge().unwrap();
        for (svc_name, svc) in doc["services"].as_mapping().unwrap() {
            let name = format!("{f}: {}", svc_name.as_str().unwrap());
            let build = &svc["build"];
            let (context, dockerfile) = match build {
                yaml_serde::Value::String(c) => (Some(c.clone()), "Dockerfile".to_string()),
                yaml_serde::Value::Mapping(_) => {
                    (build["context"].as_str().map(str::to_string), build["dockerfile"].as_str().unwrap_or("Dockerfile").to_string())
                }
                _ => (None, String::new()),
            };
            if let Some(c) = context {
                let dir = resolve(&c);
                assert!(dir.starts_with(app.path().join("apps")), "{name}: builds from {c}, which the app repository does not have");
                assert!(dir.join(&dockerfile).is_file(), "{name}: {c}/{dockerfile} missing");
                checked += 1;
            } else if !(f == "docker-compose.scale.yml" && prod["services"].get(svc_name).is_some()) {
                // (The scaled stack is an overlay: its `proxy` is prod's, reconfigured.)
                assert!(svc["image"].is_string(), "{name}: neither image nor build");
            }
            for v in svc["volumes"].as_sequence().into_iter().flatten() {
                let src = match v {
                    yaml_serde::Value::String(s) => s.split(':').next().unwrap().to_string(),
                    m => m["source"].as_str().unwrap_or("").to_string(),
                };
                // Absolute sources are the Docker host's own (the socket, container logs).
                if src.starts_with('.') {
                    assert!(resolve(&src).exists(), "{name}: volume source {src} missing in the layout");
                    checked += 1;
                }
            }
            let env_files: Vec<String> = match &svc["env_file"] {
                yaml_serde::Value::String(s) => vec![s.clone()],
                yaml_serde::Value::Sequence(v) => v.iter().filter_map(|e| e.as_str().map(str::to_string)).collect(),
                _ => vec![],
            };
            for e in env_files {
                assert!(resolve(&e).is_file(), "{name}: env_file {e} missing");
                checked += 1;
            }
            if svc["image"].as_str().is_some_and(|i| i.contains("portier")) || name.contains(": proxy-") {
                assert_eq!(svc["image"].as_str(), Some("${PORTIER_IMAGE:-portier:0.1.0}"), "{name}: the image `make image` builds");
            }
        }
    }
    assert!(checked >= 15, "{checked} paths checked");
    // Grafana gets the app's dashboards folder and a provider reading it.
    let obs: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(deploy.join("docker-compose.observability.yml")).unwrap()).unwrap();
    let mounts: Vec<&str> = obs["services"]["grafana"]["volumes"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let app_mount = mounts.iter().find(|m| m.ends_with(":/etc/grafana/dashboards-app:ro")).expect("the app's dashboards are mounted");
    assert!(resolve(app_mount.split(':').next().unwrap()).join("api-runtime-overview.json").is_file());
    let providers: yaml_serde::Value = yaml_serde::from_str(
        &std::fs::read_to_string(app.path().join("observability/grafana/provisioning/dashboards/observability.yml")).unwrap(),
    )
    .unwrap();
    let paths: Vec<&str> = providers["providers"].as_sequence().unwrap().iter().filter_map(|p| p["options"]["path"].as_str()).collect();
    assert_eq!(paths, ["/etc/grafana/provisioning/dashboards/json", "/etc/grafana/dashboards-app"]);
}

#[test]
fn dockerfile_paths_exist() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut checked = 0;
    for line in text.lines().map(str::trim).filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &parts[..parts.len() - 1] {
            assert!(root().join(src).exists(), "Dockerfile: {line}: {src} does not exist");
            checked += 1;
        }
    }
    assert!(checked >= 5);
    assert!(text.contains("HEALTHCHECK") && text.contains("healthcheck") && text.contains("USER 10001"));
    assert!(text.contains("EXPOSE 8080 9901"));
    // Profiles from the container stay readable (profiling::profiles_of_a_binary_stripped_...).
    assert!(text.contains("strip --strip-debug target/release/portier"), "keep the symbol table");
    assert!(!text.lines().any(|l| l.trim_start().starts_with("&& strip target/")), "no full strip");
    // The health check command the image runs exists and works.
    let out = Command::new(bin()).args(["healthcheck", "--admin", &closed_port().to_string()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let out = Command::new(which("promtool"))
        .args(["check", "config"])
        .arg(root().join("observability/prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let cfg: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root().join("observability/prometheus/prometheus.yml")).unwrap()).unwrap();
    let targets: Vec<String> = cfg["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|j| j["static_configs"][0]["targets"].as_sequence().into_iter().flatten().map(|t| t.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(targets, vec!["proxy:9901", "otel-collector:9464", "localhost:9090"], "and the replicas by DNS (the_scaled_stack_...)");
}

/// Compose's model of several files (`docker compose -f a -f b config`, which needs an engine
/// here absent): YAML merge keys applied, mappings merged key by key, `ports`/`expose`/
/// `volumes` lists appended without repeats, any other value replaced by the later file's.
fn rendered(files: &[&str]) -> yaml_serde::Value {
    fn merge(into: &mut yaml_serde::Value, from: yaml_serde::Value, key: Option<&str>) {
        use yaml_serde::Value as V;
        match (into, from) {
            (V::Mapping(a), V::Mapping(b)) => {
                for (k, v) in b {
                    let name = k.as_str().map(str::to_string);
                    match a.get_mut(&k) {
                        Some(slot) => merge(slot, v, name.as_deref()),
                        None => {
                            a.insert(k, v);
                        }
                    }
                }
            }
            (V::Sequence(a), V::Sequence(b)) if matches!(key, Some("ports" | "expose" | "volumes")) => {
                for v in b {
                    if !a.contains(&v) {
                        a.push(v);
                    }
                }
            }
            (slot, v) => *slot = v,
        }
    }
    let mut model = yaml_serde::Value::Mapping(Default::default());
    for f in files {
        let mut doc: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(root().join("deploy").join(f)).unwrap()).unwrap();
        doc.apply_merge().unwrap();
        merge(&mut model, doc, None);
    }
    model
}

/// Issue 23 item 3, in the model Compose runs: the scaled stack is observed replica by
/// replica, the replicas believe the front, and each operator page is reachable on
/// 127.0.0.1 with the token from `.env`.
#[test]
fn the_scaled_stack_is_observed_replica_by_replica() {
    let model = rendered(&["docker-compose.prod.yml", "docker-compose.scale.yml", "docker-compose.observability.yml"]);
    let services = model["services"].as_mapping().expect("services");
    let replicas: Vec<&str> = services.keys().filter_map(|k| k.as_str()).filter(|n| n.starts_with("proxy-")).collect();
    assert_eq!(replicas, ["proxy-1", "proxy-2", "proxy-3"]);
    let env = |svc: &str, k: &str| model["services"][svc]["environment"][k].as_str().map(str::to_string);
    // Prometheus: the front by name, every replica by DNS on its admin port.
    let prom: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root().join("observability/prometheus/prometheus.yml")).unwrap()).unwrap();
    let jobs = prom["scrape_configs"].as_sequence().unwrap();
    let job = |name: &str| jobs.iter().find(|j| j["job_name"].as_str() == Some(name)).unwrap_or_else(|| panic!("job {name}"));
    assert_eq!(job("proxy")["static_configs"][0]["targets"][0].as_str(), Some("proxy:9901"));
    let sd = &job("proxy-replicas")["dns_sd_configs"][0];
    let names: Vec<&str> = sd["names"].as_sequence().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert_eq!(names, replicas, "every replica scraped");
    let relabel = job("proxy-replicas")["relabel_configs"].as_sequence().unwrap();
    assert!(relabel.iter().any(|r| r["target_label"].as_str() == Some("instance")), "labelled by replica");
    for (i, r) in replicas.iter().enumerate() {
        let admin = env(r, "PORTIER_LISTEN_ADMIN").expect("admin address");
        assert_eq!(admin.rsplit(':').next().and_then(|p| p.parse::<u64>().ok()), sd["port"].as_u64(), "{r}: scraped on its admin port");
        assert!(env(r, "PORTIER_ADMIN_HOSTS").is_some_and(|h| h.split(',').any(|n| n == *r)), "{r} answers Prometheus by its name");
        // The front's X-Forwarded-For is believed: Docker's networks are in these ranges.
        let trusted = env(r, "PORTIER_TRUSTED_PROXIES").unwrap_or_else(|| panic!("{r} trusts the front"));
        let nets: Vec<ipnet::IpNet> = trusted.split(',').map(|n| n.trim().parse().unwrap()).collect();
        for docker in ["172.17.0.2", "172.18.0.5", "192.168.16.3"] {
            assert!(nets.iter().any(|n| n.contains(&docker.parse::<std::net::IpAddr>().unwrap())), "{r}: {docker}");
        }
        assert_eq!(env(r, "PORTIER_ADMIN_TOKEN").as_deref(), Some("${PORTIER_ADMIN_TOKEN:-}"), "{r}: the token from .env");
        let ports = model["services"][*r]["ports"].as_sequence().map(|p| p.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>());
        assert_eq!(ports, Some(vec![format!("127.0.0.1:{}:9901", 9902 + i).as_str()]), "{r}: its /ui on this machine only");
    }
    let front_ports: Vec<&str> = model["services"]["proxy"]["ports"].as_sequence().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert_eq!(front_ports, ["8080:8080", "127.0.0.1:9901:9901"]);
    assert_eq!(env("proxy", "PORTIER_ADMIN_TOKEN").as_deref(), Some("${PORTIER_ADMIN_TOKEN:-}"));
    assert!(model["services"]["proxy"]["command"]
        .as_sequence()
        .is_some_and(|c| c.iter().any(|a| a.as_str() == Some("/etc/portier/front.toml"))));
    // Every other published port is Grafana's, on 127.0.0.1.
    for (name, svc) in services {
        for p in svc["ports"].as_sequence().into_iter().flatten().filter_map(|p| p.as_str()) {
            assert!(
                p.starts_with("127.0.0.1:") || (name.as_str() == Some("proxy") && p == "8080:8080") || name.as_str() == Some("api"),
                "{name:?}: {p}"
            );
        }
    }
    // The front's requests are its own series; the replicas' are the runbook's.
    let front: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("config/front.toml")).unwrap()).unwrap();
    assert_eq!(front["telemetry"]["service_name"].as_str(), Some("proxy-front"));
    assert_eq!(front["cache"]["enabled"].as_bool(), Some(false));
    let replica: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("config/portier.toml")).unwrap()).unwrap();
    assert_eq!(replica["telemetry"]["service_name"].as_str(), Some("proxy"));
    // The single-node stacks publish their /ui the same way.
    for f in ["docker-compose.yml", "docker-compose.prod.yml"] {
        let m = rendered(&[f]);
        let ports: Vec<&str> = m["services"]["proxy"]["ports"].as_sequence().unwrap().iter().filter_map(|p| p.as_str()).collect();
        assert!(ports.contains(&"127.0.0.1:9901:9901"), "{f}: {ports:?}");
        assert_eq!(m["services"]["proxy"]["environment"]["PORTIER_ADMIN_TOKEN"].as_str(), Some("${PORTIER_ADMIN_TOKEN:-}"), "{f}");
    }
}

/// The runbook's `nodejs_*{service_name="api"}` queries need the Collector to turn resource
/// attributes into labels; and the Collector must export what Prometheus scrapes.
#[test]
fn the_collector_labels_metrics_with_their_service_name() {
    let cfg: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root().join("observability/otel-collector/config.yml")).unwrap()).unwrap();
    let prom = &cfg["exporters"]["prometheus"];
    assert_eq!(prom["endpoint"].as_str(), Some("0.0.0.0:9464"));
    assert_eq!(prom["resource_to_telemetry_conversion"]["enabled"].as_bool(), Some(true), "{prom:?}");
}

/// The runbook's series for both services, as the shipped Collector config builds them:
/// `service_name="proxy"` from Portier's own /metrics (every request, sampled or not), so its
/// spans are kept out of the connector; `"api"` from every API span the Collector receives,
/// with nothing that samples or drops them on the way to the connector. (No otelcol with the
/// spanmetrics connector installs here: the config is checked as the Collector reads it.)
#[test]
fn the_collector_builds_api_span_metrics_from_every_span_and_never_the_proxys() {
    let cfg: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(root().join("observability/otel-collector/config.yml")).unwrap()).unwrap();
    let sm = &cfg["connectors"]["spanmetrics"];
    assert_eq!(sm["namespace"].as_str(), Some("traces.spanmetrics"), "traces_spanmetrics_* names");
    assert_eq!(sm["histogram"]["unit"].as_str(), Some("ms"), "traces_spanmetrics_duration_milliseconds_*");
    let pipelines = cfg["service"]["pipelines"].as_mapping().expect("pipelines");
    let feeding: Vec<&yaml_serde::Value> = pipelines
        .values()
        .filter(|p| p["exporters"].as_sequence().is_some_and(|e| e.iter().any(|x| x.as_str() == Some("spanmetrics"))))
        .collect();
    assert_eq!(feeding.len(), 1, "one pipeline feeds the connector");
    let processors: Vec<&str> =
        feeding[0]["processors"].as_sequence().map(|v| v.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
    for p in &processors {
        assert!(
            !p.contains("sampl") && (p.starts_with("batch") || p.starts_with("filter/")),
            "{p}: span metrics must see every API span (sample after the connector, never before)"
        );
        if let Some(rules) = cfg["processors"][*p]["traces"]["span"].as_sequence() {
            let rules: Vec<&str> = rules.iter().filter_map(|r| r.as_str()).collect();
            assert_eq!(
                rules,
                ["resource.attributes[\"service.name\"] == \"proxy\"", "resource.attributes[\"service.name\"] == \"proxy-front\""],
                "{p} drops Portier's spans only (the replicas' and the scaled stack's front's)"
            );
        }
    }
    assert!(processors.iter().any(|p| p.starts_with("filter/")), "Portier's spans are kept out: counted once, from /metrics");
    let metrics = &pipelines[&yaml_serde::Value::from("metrics")];
    assert!(metrics["receivers"].as_sequence().is_some_and(|r| r.iter().any(|x| x.as_str() == Some("spanmetrics"))), "{metrics:?}");
}

/// The shipped config routes the Astro landing by host, before the catch-all web route.
#[tokio::test(flavor = "multi_thread")]
async fn the_landing_page_is_routed_by_host() {
    use crate::common::scripted::{Reply, Scripted};
    let (web, landing) = (
        Scripted::start(|_, _| Reply::new(200, &[("cache-control", "no-store")], "web")).await,
        Scripted::start(|_, _| Reply::new(200, &[("cache-control", "no-store")], "landing")).await,
    );
    let text = std::fs::read_to_string(root().join("config/portier.toml"))
        .unwrap()
        .replace("127.0.0.1:5173", &web.addr.to_string())
        .replace("127.0.0.1:4321", &landing.addr.to_string())
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let p = Portier::start(&text);
    let r = get_with(p.public, "/", &[("Host", "landing.localhost:8080")]).await;
    assert_eq!((r.status, r.text()), (200, "landing".to_string()));
    assert_eq!(get(p.public, "/").await.text(), "web");
}

#[test]
fn dashboards_are_valid_grafana_models() {
    let ds: yaml_serde::Value = yaml_serde::from_str(
        &std::fs::read_to_string(root().join("observability/grafana/provisioning/datasources/observability.yml")).unwrap(),
    )
    .unwrap();
    let uids: BTreeSet<String> = ds["datasources"].as_sequence().unwrap().iter().map(|d| d["uid"].as_str().unwrap().to_string()).collect();
    assert_eq!(uids, ["loki", "prometheus", "pyroscope", "tempo"].iter().map(|s| s.to_string()).collect());
    let mut seen = HashSet::new();
    let mut titles = BTreeSet::new();
    for (f, d) in dashboards() {
        let name = f.display().to_string();
        assert!(seen.insert(d["uid"].as_str().unwrap().to_string()), "{name}: duplicate uid");
        titles.insert(d["title"].as_str().unwrap().to_string());
        assert!(d["schemaVersion"].is_u64(), "{name}: schemaVersion is a number");
        assert!(d.get("id").is_none() || d["id"].is_null(), "{name}: no fixed id");
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty());
        let mut ids = HashSet::new();
        for p in panels {
            assert!(ids.insert(p["id"].as_u64().unwrap()), "{name}: duplicate panel id");
            assert!(p["type"].as_str().is_some_and(|t| !t.is_empty()), "{name}: panel without type");
            assert!(p["title"].is_string());
            for k in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][k].is_u64(), "{name}: gridPos.{k}");
            }
            assert!(uids.contains(p["datasource"]["uid"].as_str().unwrap()), "{name}: unknown datasource");
            for t in p["targets"].as_array().unwrap() {
                assert!(t["refId"].is_string() && t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{name}: target");
                assert!(uids.contains(t["datasource"]["uid"].as_str().unwrap()));
            }
        }
    }
    let want = ["Edge Cache (Portier)", "Frontend/Web (proxy + API)", "API Node Runtime", "DB/Postgres", "Cache", "k6 Results"];
    for w in want {
        assert!(titles.contains(w), "dashboard {w:?} in {titles:?}");
    }
    // The provider reads the folder Compose mounts the JSON into.
    let provider = std::fs::read_to_string(root().join("observability/grafana/provisioning/dashboards/observability.yml")).unwrap();
    assert!(provider.contains("path: /etc/grafana/provisioning/dashboards/json"));
    let obs = std::fs::read_to_string(root().join("deploy/docker-compose.observability.yml")).unwrap();
    assert!(obs.contains("../observability/grafana/provisioning:/etc/grafana/provisioning:ro"));
}

/// Whether a PromQL expression reads a series Portier exports.
fn names_portier_series(expr: &str) -> bool {
    expr.contains("service_name=\"proxy\"") || ["cache_", "upstream_", "http_server_response_body_size"].iter().any(|p| expr.contains(p))
}

/// Runs a shipped k6 script against `base`; `outs` are k6 `--out` values (`json=...`,
/// `experimental-prometheus-rw`).
fn k6(script: &str, base: std::net::SocketAddr, env: &[(&str, &str)], outs: &[String]) -> (bool, String) {
    let mut cmd = Command::new(which("k6"));
    cmd.arg("run").arg("--no-color").arg("--quiet");
    for o in outs {
        cmd.arg(format!("--out={o}"));
    }
    cmd.arg(root().join("observability/k6/scripts").join(script))
        .env("K6_BASE_URL", format!("http://{base}"))
        .env("K6_NO_USAGE_REPORT", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("k6 runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread")]
async fn k6_passes_and_every_dashboard_query_on_portier_series_returns_data() {
    let demo = start_demo(&root().join("config/portier.toml"));
    let prom = start_prometheus(demo.admin).await;
    let dir = tempfile::tempdir().unwrap();
    let public = demo.public;

    let (ok, out) = tokio::task::spawn_blocking(move || k6("smoke.js", public, &[("K6_SMOKE_DURATION", "3s")], &[])).await.unwrap();
    assert!(ok, "k6 smoke.js thresholds:\n{out}");
    let json = dir.path().join("cache-hit.json");
    let j2 = json.clone();
    // With the runbook's `--out experimental-prometheus-rw` into the same Prometheus, as the
    // stack's k6 service does (the k6 Results dashboard reads it).
    let rw = format!("http://{}/api/v1/write", prom.addr);
    let (ok, out) = tokio::task::spawn_blocking(move || {
        k6(
            "cache-hit.js",
            public,
            &[
                ("K6_CACHE_DURATION", "5s"),
                ("K6_USERNAME", "demo"),
                ("K6_PROMETHEUS_RW_SERVER_URL", &rw),
                ("K6_PROMETHEUS_RW_TREND_STATS", "p(95),p(99),avg,max"),
                ("K6_PROMETHEUS_RW_PUSH_INTERVAL", "1s"),
            ],
            &[format!("json={}", j2.display()), "experimental-prometheus-rw".to_string()],
        )
    })
    .await
    .unwrap();
    assert!(ok, "k6 cache-hit.js thresholds and checks:\n{out}");
    for check in ["first is MISS", "second is HIT", "Age grows", "conditional is 304"] {
        assert!(out.contains(&format!("✓ {check}")), "{check} in\n{out}");
    }

    // The runbook's CSV, from k6's JSON output.
    let csv = dir.path().join("ramp-http_req_duration.csv");
    let conv = Command::new(which("python3")).arg(root().join("observability/k6/k6_json_to_csv.py")).arg(&json).arg(&csv).output().unwrap();
    assert!(conv.status.success(), "{}", String::from_utf8_lossy(&conv.stderr));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("\"time\",\"value_ms\""));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() > 50, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.split(',').nth(1).unwrap().trim_matches('"').parse::<f64>().is_ok()));

    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut checked = 0;
    for (f, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                if t["datasource"]["uid"] != "prometheus" {
                    continue;
                }
                let expr = t["expr"].as_str().unwrap();
                // Every Prometheus query parses (query_result asserts success)...
                let result = query_result(prom.addr, expr).await;
                // ...and those reading Portier's series (or k6's) have data.
                if names_portier_series(expr) || expr.contains("k6_") {
                    assert!(!result.as_array().unwrap().is_empty(), "{}: panel {:?}: no data for {expr}", f.display(), p["title"]);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 25, "{checked} Portier queries checked");
}

/// The runbook's resilience test, reproduced: under k6, the origin stops for two seconds and
/// comes back where it was. Cached URLs answer 200 throughout (stale-if-error), uncached ones
/// get fast gateway errors naming the request id, and traffic recovers within one
/// health-check interval of the origin's return.
#[tokio::test(flavor = "multi_thread")]
async fn k6_resilience_origin_restarted_mid_run() {
    use crate::common::scripted::{Reply, Scripted};
    let handler = |req: &crate::common::scripted::Seen, _: usize| {
        let cc = if req.target.starts_with("/cached") { "max-age=1" } else { "no-store" };
        Reply::new(200, &[("cache-control", cc)], "ok")
    };
    let origin = Scripted::start(handler).await;
    let addr = origin.addr;
    let cfg = format!(
        "[upstreams.o]\naddresses = [\"{addr}\"]\nhealth_check = {{ path = \"/health\", interval = \"1s\", timeout = \"500ms\" }}\n[[routes]]\npath = \"/*\"\npool = \"o\"\n[telemetry.access_log]\nformat = \"off\"\n"
    );
    let p = Portier::start(&cfg);
    assert_eq!(get(p.public, "/cached").await.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("k6.json");
    let (public, json2) = (p.public, json.clone());
    let run = tokio::task::spawn_blocking(move || {
        let env = [("K6_CACHED_PATH", "/cached"), ("K6_LIVE_PATH", "/live"), ("K6_RESILIENCE_DURATION", "8s"), ("K6_RESILIENCE_VUS", "8")];
        k6("resilience.js", public, &env, &[format!("json={}", json2.display())])
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    origin.stop().await;
    let stopped = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _back = Scripted::start_at(addr, handler).await;
    let restarted = std::time::SystemTime::now();
    let (ok, out) = run.await.unwrap();

    // Every `live` request, with its time and status, from k6's own output.
    let mut live = Vec::new();
    let mut cached = (0usize, 0usize);
    let mut cached_failed = std::collections::BTreeMap::<u16, usize>::new();
    for line in std::fs::read_to_string(&json).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["type"] != "Point" || v["metric"] != "http_reqs" {
            continue;
        }
        let (tags, time) = (&v["data"]["tags"], v["data"]["time"].as_str().unwrap_or(""));
        let status: u16 = tags["status"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let at = rfc3339(time);
        match tags["name"].as_str() {
            Some("live") => live.push((at, status)),
            Some("cached") => {
                cached.0 += 1;
                cached.1 += usize::from(status == 200);
                if status != 200 {
                    *cached_failed.entry(status).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let failures: Vec<_> = live.iter().filter(|(_, s)| *s != 200).collect();
    let last_failure = failures.iter().map(|(t, _)| *t).max();
    let recovered_after = last_failure.map(|t| t.duration_since(restarted).unwrap_or_default());
    eprintln!(
        "resilience: cached {}/{} answered 200 (others: {cached_failed:?}); live {} requests, {} failed ({:?}); origin down {:?}; last failure {:?} after the restart",
        cached.1,
        cached.0,
        live.len(),
        failures.len(),
        failures.iter().map(|(_, s)| *s).collect::<std::collections::BTreeSet<_>>(),
        restarted.duration_since(stopped).unwrap_or_default(),
        recovered_after
    );
    assert!(ok, "k6 thresholds (cached_ok == 1, failure_answered == 1, failure_duration p99 < 1 s):\n{out}");
    assert_eq!(cached.0, cached.1, "every cached request answered 200");
    assert!(!failures.is_empty(), "the outage was seen by uncached requests");
    assert!(
        recovered_after.unwrap_or_default() <= Duration::from_millis(1500),
        "recovered within one health-check interval: {recovered_after:?}"
    );
    assert!(live.iter().rev().take(20).all(|(_, s)| *s == 200), "the end of the run is all 200");
}

/// k6's RFC 3339 timestamps (`2026-11-29T19:01:02.123456789Z`, or with an offset).
fn rfc3339(t: &str) -> std::time::SystemTime {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map(Into::into).unwrap_or(std::time::UNIX_EPOCH)
}

//! Packaging: the Dockerfile and the kustomize manifests in `deploy/`.
//!
//! Every kustomization is built with `kubectl kustomize`, and every object
//! it yields is read as a typed Kubernetes object (k8s-openapi; the
//! prometheus-operator's kinds as small local types) and written back, so
//! that a misspelt or unknown field fails. The pod specs are then checked
//! against the sidecar's own configuration (the ConfigMap they mount) and
//! against the real binary running that configuration.
//!
//! The image test builds the Dockerfile's `prebuilt` target with podman from
//! the static release binary in `target/static` (built by
//! `.ci/install.d/deploy.sh`, or here when it is missing) and inspects the
//! result: nothing is pulled and no container is run.
//!
//! Tools: kubectl, promtool, hadolint and podman, which `.ci/run` installs.
//! A missing tool fails its test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, HTTPGetAction, PodSpec, Secret, Service};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use healthproxy::config::{Config, ProcessEnv};

use crate::support::{Proxy, eventually, metric, request, run_binary, tool};

/// The two ways to run the sidecar; each is a kustomization in `deploy/`.
const VARIANTS: [&str; 2] = ["classic", "native"];

/// The names the example uses for its two containers.
const APP: &str = "app";
const SIDECAR: &str = "healthproxy";

/// The kubelet's floor on the grace left after a preStop hook
/// (`minimumGracePeriodInSeconds`, kubelet-semantics §5.2).
const KUBELET_MIN_GRACE_SECONDS: u64 = 2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to completion within `within` and returns its output;
/// fails, showing both streams, unless it exits 0.
fn run(command: &mut Command, within: Duration) -> Output {
    let what = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(within) else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("{what} did not finish within {within:?}");
    };
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// === The built manifests ===

/// The prometheus-operator's PodMonitor: the fields the example uses.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMonitor {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PodMonitorSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMonitorSpec {
    selector: LabelSelector,
    pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodMetricsEndpoint {
    port: String,
    path: String,
    interval: String,
}

/// The prometheus-operator's PrometheusRule; its groups are checked by
/// promtool.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: PrometheusRuleSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PrometheusRuleSpec {
    groups: Vec<Value>,
}

/// The typed objects of one kustomization.
#[derive(Debug, Default)]
struct Built {
    dir: String,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    network_policies: Vec<NetworkPolicy>,
    pod_monitors: Vec<PodMonitor>,
    prometheus_rules: Vec<PrometheusRule>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    mutating_webhooks: Vec<MutatingWebhookConfiguration>,
    cert_manager: Vec<CertManagerObject>,
}

/// Every directory under `deploy/` with a kustomization, relative to
/// `deploy/`.
fn kustomizations() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, found);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let dir = path.parent().unwrap().strip_prefix(root).unwrap();
                found.push(dir.to_string_lossy().into_owned());
            }
        }
    }
    let root = repo().join("deploy");
    let mut found = Vec::new();
    walk(&root, &root, &mut found);
    found.sort();
    found
}

/// The documents `kubectl kustomize deploy/DIR` prints.
fn kustomize(dir: &str) -> Vec<Value> {
    let out = run(
        Command::new(tool("kubectl"))
            .arg("kustomize")
            .arg(repo().join("deploy").join(dir)),
        Duration::from_secs(60),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("deploy/{dir}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The first place where `written` and `read_back` differ: a field of the
/// manifest that the typed object does not have, or a value it changed.
fn difference(written: &Value, read_back: &Value, at: &str) -> Option<String> {
    match (written, read_back) {
        (Value::Object(w), Value::Object(r)) => {
            for (key, value) in w {
                let here = format!("{at}.{key}");
                match r.get(key) {
                    None => return Some(format!("{here} is not a field of the type")),
                    Some(back) => {
                        if let Some(d) = difference(value, back, &here) {
                            return Some(d);
                        }
                    }
                }
            }
            r.keys()
                .find(|k| !w.contains_key(*k))
                .map(|k| format!("{at}.{k} appeared when read"))
        }
        (Value::Array(w), Value::Array(r)) if w.len() == r.len() => w
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (w, r))| difference(w, r, &format!("{at}[{i}]"))),
        (w, r) if w == r => None,
        (w, r) => Some(format!("{at}: {w} was read as {r}")),
    }
}

/// cert-manager's Issuer and Certificate (deploy/webhook): the fields used.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertManagerObject {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: CertManagerSpec,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertManagerSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    self_signed: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    renew_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_ref: Option<BTreeMap<String, String>>,
}

/// `object` as a `T`, failing if reading it as `T` loses or changes
/// anything (k8s-openapi skips unknown fields silently).
fn typed<T: DeserializeOwned + Serialize>(object: &Value, what: &str) -> T {
    let value: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&value).unwrap();
    if let Some(d) = difference(object, &back, "") {
        panic!("{what}: {d}");
    }
    value
}

/// Builds `deploy/DIR` and reads every object as its type.
fn build(dir: &str) -> Built {
    built_from(dir, kustomize(dir))
}

/// The typed objects of `objects`, built from `dir`.
fn built_from(dir: &str, objects: Vec<Value>) -> Built {
    let mut built = Built {
        dir: dir.to_string(),
        ..Built::default()
    };
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let what = format!("deploy/{dir}: {kind} {name}");
        match (api_version, kind) {
            ("apps/v1", "Deployment") => built.deployments.push(typed(&object, &what)),
            ("v1", "Service") => built.services.push(typed(&object, &what)),
            ("v1", "ConfigMap") => built.config_maps.push(typed(&object, &what)),
            ("v1", "Secret") => built.secrets.push(typed(&object, &what)),
            ("networking.k8s.io/v1", "NetworkPolicy") => built.network_policies.push(typed(&object, &what)),
            ("monitoring.coreos.com/v1", "PodMonitor") => built.pod_monitors.push(typed(&object, &what)),
            ("monitoring.coreos.com/v1", "PrometheusRule") => {
                built.prometheus_rules.push(typed(&object, &what))
            }
            ("v1", "Namespace") => built.namespaces.push(typed(&object, &what)),
            ("v1", "ServiceAccount") => built.service_accounts.push(typed(&object, &what)),
            ("policy/v1", "PodDisruptionBudget") => built.disruption_budgets.push(typed(&object, &what)),
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                built.mutating_webhooks.push(typed(&object, &what))
            }
            ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                built.cert_manager.push(typed(&object, &what))
            }
            _ => panic!("{what}: no typed check for {api_version} {kind}; add one to tests/it/deploy.rs"),
        }
    }
    built
}

/// One variant's pod, with what the sidecar mounts.
struct Pod {
    built: Built,
    deployment: Deployment,
    spec: PodSpec,
    app: Container,
    sidecar: Container,
}

impl Pod {
    fn of(variant: &str) -> Pod {
        let built = build(variant);
        let [deployment] = &built.deployments[..] else {
            panic!("deploy/{variant}: expected one Deployment");
        };
        let deployment = deployment.clone();
        let spec = deployment.spec.clone().unwrap().template.spec.unwrap();
        let find = |containers: &[Container], name: &str| containers.iter().find(|c| c.name == name).cloned();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let app =
            find(&spec.containers, APP).unwrap_or_else(|| panic!("deploy/{variant}: no container {APP}"));
        let sidecar = find(&spec.containers, SIDECAR)
            .or_else(|| find(&inits, SIDECAR))
            .unwrap_or_else(|| panic!("deploy/{variant}: no container {SIDECAR}"));
        Pod {
            built,
            deployment,
            spec,
            app,
            sidecar,
        }
    }

    /// The volume mounted by the sidecar at `dir`.
    fn volume_at(&self, dir: &Path) -> &k8s_openapi::api::core::v1::Volume {
        let mounts = self.sidecar.volume_mounts.as_deref().unwrap_or_default();
        let mount = mounts
            .iter()
            .find(|m| Path::new(&m.mount_path) == dir)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the sidecar mounts nothing at {}",
                    self.built.dir,
                    dir.display()
                )
            });
        assert_eq!(
            mount.read_only,
            Some(true),
            "{}: mount {}",
            self.built.dir,
            mount.name
        );
        self.spec
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("{}: no volume {}", self.built.dir, mount.name))
    }

    /// The path after `--config` in the sidecar's arguments.
    fn config_path(&self) -> PathBuf {
        let args = self.sidecar.args.as_deref().unwrap_or_default();
        let at = args
            .iter()
            .position(|a| a == "--config")
            .unwrap_or_else(|| panic!("{}: the sidecar's args name no --config", self.built.dir));
        PathBuf::from(&args[at + 1])
    }

    /// The sidecar's config file as mounted from its ConfigMap.
    fn config_text(&self) -> String {
        let path = self.config_path();
        let volume = self.volume_at(path.parent().unwrap());
        let name = &volume
            .config_map
            .as_ref()
            .expect("the config is a ConfigMap")
            .name;
        let map = self
            .built
            .config_maps
            .iter()
            .find(|m| m.metadata.name.as_ref() == Some(name))
            .unwrap_or_else(|| panic!("{}: no ConfigMap {name}", self.built.dir));
        let key = path.file_name().unwrap().to_str().unwrap();
        map.data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no {key}", self.built.dir))
            .clone()
    }

    fn config(&self) -> Config {
        Config::from_toml_str(&self.config_text(), "the ConfigMap", &ProcessEnv)
            .unwrap_or_else(|e| panic!("{}: {e}", self.built.dir))
    }

    /// The token the sidecar reads from `drain.token_file`, out of its Secret.
    fn token(&self) -> String {
        let config = self.config();
        let path = config
            .drain
            .token_file
            .expect("the example sets drain.token_file");
        let volume = self.volume_at(path.parent().unwrap());
        let name = volume
            .secret
            .as_ref()
            .expect("the token is a Secret")
            .secret_name
            .clone()
            .unwrap();
        let secret = self
            .built
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(&name))
            .unwrap_or_else(|| panic!("{}: no Secret {name}", self.built.dir));
        let key = path.file_name().unwrap().to_str().unwrap();
        let from_string = secret.string_data.as_ref().and_then(|d| d.get(key)).cloned();
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8(b.0.clone()).unwrap());
        from_string
            .or(from_data)
            .unwrap_or_else(|| panic!("{}: Secret {name} has no {key}", self.built.dir))
            .trim_end()
            .to_string()
    }

    /// The pod template's metadata.
    fn template_meta(&self) -> &ObjectMeta {
        let template = &self.deployment.spec.as_ref().unwrap().template;
        template.metadata.as_ref().unwrap()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.template_meta().labels.clone().unwrap_or_default()
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        self.template_meta().annotations.clone().unwrap_or_default()
    }

    fn http_gets(&self) -> Vec<(String, HTTPGetAction)> {
        let mut all = Vec::new();
        for c in [&self.app, &self.sidecar] {
            for (probe, kind) in [
                (&c.startup_probe, "startupProbe"),
                (&c.liveness_probe, "livenessProbe"),
                (&c.readiness_probe, "readinessProbe"),
            ] {
                if let Some(get) = probe.as_ref().and_then(|p| p.http_get.clone()) {
                    all.push((format!("{} {kind}", c.name), get));
                }
            }
            let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
            if let Some(get) = pre_stop.and_then(|h| h.http_get.clone()) {
                all.push((format!("{} preStop", c.name), get));
            }
        }
        all
    }
}

fn path_of(get: &HTTPGetAction) -> &str {
    get.path.as_deref().unwrap_or("/")
}

#[test]
fn every_kustomization_builds_into_typed_objects() {
    let dirs = kustomizations();
    for expected in ["base", "classic", "native", "grpc", "prometheus", "webhook"] {
        assert!(
            dirs.iter().any(|d| d == expected),
            "no deploy/{expected}: {dirs:?}"
        );
    }
    for dir in &dirs {
        let built = build(dir);
        let count = built.deployments.len()
            + built.services.len()
            + built.config_maps.len()
            + built.secrets.len()
            + built.network_policies.len()
            + built.pod_monitors.len()
            + built.prometheus_rules.len()
            + built.namespaces.len()
            + built.service_accounts.len()
            + built.disruption_budgets.len()
            + built.mutating_webhooks.len()
            + built.cert_manager.len();
        assert!(count > 0, "deploy/{dir} builds to nothing");
    }
    for variant in VARIANTS {
        let built = build(variant);
        assert_eq!(built.deployments.len(), 1, "{variant}");
        assert_eq!(built.services.len(), 1, "{variant}");
        assert_eq!(built.config_maps.len(), 1, "{variant}");
        assert_eq!(built.network_policies.len(), 1, "{variant}");
        assert_eq!(built.pod_monitors.len(), 1, "{variant}");
        assert_eq!(built.prometheus_rules.len(), 1, "{variant}");
    }
}

#[test]
fn the_classic_sidecar_is_a_second_container() {
    let pod = Pod::of("classic");
    let mut names: Vec<_> = pod.spec.containers.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, [APP, SIDECAR]);
    assert!(pod.spec.init_containers.is_none());
    // The sidecar comes first, yet `kubectl logs` and `exec` pick the app.
    let default = pod
        .annotations()
        .get("kubectl.kubernetes.io/default-container")
        .cloned();
    assert_eq!(default.as_deref(), Some(APP));
    assert!(pod.sidecar.restart_policy.is_none());
}

#[test]
fn the_native_sidecar_is_a_restartable_init_container_started_on_its_healthz() {
    let pod = Pod::of("native");
    let names: Vec<_> = pod.spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [APP]);
    let inits = pod.spec.init_containers.as_deref().unwrap();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0].name, SIDECAR);
    assert_eq!(pod.sidecar.restart_policy.as_deref(), Some("Always"));
    let startup = pod
        .sidecar
        .startup_probe
        .as_ref()
        .expect("a startupProbe on the sidecar");
    let get = startup.http_get.as_ref().expect("an httpGet startupProbe");
    assert_eq!(path_of(get), "/healthz");
    assert_eq!(get.port, IntOrString::Int(i32::from(pod.config().listen.port())));
}

#[test]
fn classic_and_native_sidecars_differ_only_in_restart_policy_and_startup_probe() {
    let mut classic = Pod::of("classic").sidecar;
    let mut native = Pod::of("native").sidecar;
    native.restart_policy = None;
    native.startup_probe = None;
    classic.startup_probe = None;
    assert_eq!(classic, native);
    let [classic, native] = VARIANTS.map(|v| {
        let mut spec = Pod::of(v).spec;
        spec.containers.retain(|c| c.name != SIDECAR);
        spec.init_containers = None;
        spec
    });
    assert_eq!(classic, native, "the rest of the pod differs");
}

#[test]
fn the_app_container_probes_and_prestop_point_at_the_sidecar_port() {
    for variant in VARIANTS {
        let pod = Pod::of(variant);
        let port = pod.config().listen.port();
        let port = IntOrString::Int(i32::from(port));
        let app = &pod.app;
        for (probe, path) in [
            (&app.startup_probe, "/startupz"),
            (&app.liveness_probe, "/livez"),
            (&app.readiness_probe, "/readyz"),
        ] {
            let get = probe.as_ref().and_then(|p| p.http_get.as_ref());
            let get = get.unwrap_or_else(|| panic!("{variant}: the app has no httpGet probe on {path}"));
            assert_eq!(path_of(get), path, "{variant}");
            assert_eq!(
                get.port, port,
                "{variant} {path}: the sidecar's port, as a number"
            );
            assert!(get.host.is_none(), "{variant} {path}: the pod's own IP");
            assert!(
                matches!(get.scheme.as_deref(), None | Some("HTTP")),
                "{variant} {path}"
            );
        }
        let pre_stop = app.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        let get = pre_stop
            .and_then(|h| h.http_get.as_ref())
            .expect("an httpGet preStop");
        assert_eq!(path_of(get), "/prestop", "{variant}");
        assert_eq!(get.port, port, "{variant}");
        let headers = get.http_headers.as_deref().unwrap_or_default();
        let authorization: Vec<_> = headers.iter().filter(|h| h.name == "Authorization").collect();
        assert_eq!(authorization.len(), 1, "{variant}: {headers:?}");
        assert_eq!(
            authorization[0].value,
            format!("Bearer {}", pod.token()),
            "{variant}"
        );
        // The sidecar's own port, liveness and image.
        let ports = pod.sidecar.ports.as_deref().unwrap_or_default();
        assert!(
            ports.iter().any(|p| IntOrString::Int(p.container_port) == port),
            "{variant}: {ports:?}"
        );
        let live = pod
            .sidecar
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref());
        let live = live.unwrap_or_else(|| panic!("{variant}: the sidecar has no httpGet liveness"));
        assert_eq!((path_of(live), &live.port), ("/healthz", &port), "{variant}");
        let image = pod.sidecar.image.as_deref().unwrap();
        assert!(
            image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{variant}: the sidecar's image {image} is not this version"
        );
    }
}

#[test]
fn the_grpc_overlay_probes_the_app_through_the_sidecars_grpc_health_endpoint() {
    let pod = Pod::of("grpc");
    let config = pod.config();
    let grpc_port = config.grpc_listen.expect("deploy/grpc sets grpc_listen").port();
    for (probe, service) in [
        (&pod.app.startup_probe, "startup"),
        (&pod.app.liveness_probe, "liveness"),
        (&pod.app.readiness_probe, "readiness"),
    ] {
        let probe = probe.as_ref().unwrap_or_else(|| panic!("no {service} probe"));
        assert!(probe.http_get.is_none(), "{service}: one handler per probe");
        let grpc = probe
            .grpc
            .as_ref()
            .unwrap_or_else(|| panic!("{service}: not a grpc probe"));
        assert_eq!(grpc.port, i32::from(grpc_port), "{service}");
        assert_eq!(grpc.service.as_deref(), Some(service));
    }
    let ports = pod.sidecar.ports.as_deref().unwrap_or_default();
    assert!(
        ports.iter().any(|p| p.container_port == i32::from(grpc_port)),
        "{ports:?}"
    );
    // The same sidecar config as the classic variant's, but grpc_listen.
    let classic = Pod::of("classic").config();
    assert_eq!(config.listen, classic.listen);
    assert_eq!(config.drain, classic.drain);
    assert_eq!(config.server, classic.server);
    assert_eq!(config.checks.len(), classic.checks.len());
    for (a, b) in config.checks.iter().zip(&classic.checks) {
        assert!(a.same_definition(b), "{} differs from the classic config", a.name);
    }
}

#[test]
fn the_grace_period_exceeds_drain_max_plus_the_kubelets_two_seconds() {
    for variant in VARIANTS {
        let pod = Pod::of(variant);
        let grace = pod
            .spec
            .termination_grace_period_seconds
            .expect("terminationGracePeriodSeconds");
        let drain = pod.config().drain;
        assert!(drain.min < drain.max, "{variant}");
        let needed = drain.max + Duration::from_secs(KUBELET_MIN_GRACE_SECONDS);
        assert!(
            Duration::from_secs(u64::try_from(grace).unwrap()) > needed,
            "{variant}: terminationGracePeriodSeconds {grace} is not above drain.max {:?} + 2s",
            drain.max
        );
        assert!(
            drain.ports.iter().any(|p| {
                pod.app
                    .ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.container_port == i32::from(*p))
            }),
            "{variant}: drain.ports {:?} names none of the app's ports",
            drain.ports
        );
    }
}

#[test]
fn the_sidecar_is_hardened_small_and_reads_only_its_mounts() {
    for variant in VARIANTS {
        let pod = Pod::of(variant);
        let sc = pod.sidecar.security_context.as_ref().expect("a securityContext");
        assert_eq!(sc.run_as_non_root, Some(true), "{variant}");
        assert!(
            sc.run_as_user.is_some_and(|u| u > 0),
            "{variant}: a numeric non-root runAsUser"
        );
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{variant}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{variant}");
        assert_ne!(sc.privileged, Some(true), "{variant}");
        let caps = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        assert_eq!(caps, ["ALL"], "{variant}");
        assert!(sc.capabilities.as_ref().unwrap().add.is_none(), "{variant}");
        let seccomp = sc.seccomp_profile.as_ref().map(|s| s.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{variant}");
        let resources = pod.sidecar.resources.as_ref().expect("resources");
        let requests = resources.requests.clone().unwrap_or_default();
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "{variant}"
        );
        let limits = resources.limits.clone().unwrap_or_default();
        assert!(limits.contains_key("memory"), "{variant}: a memory limit");
        for mount in pod.sidecar.volume_mounts.as_deref().unwrap_or_default() {
            assert_eq!(mount.read_only, Some(true), "{variant}: {}", mount.name);
        }
    }
}

#[test]
fn each_memory_limit_follows_from_the_budget_of_its_configmap() {
    for variant in ["classic", "native", "grpc"] {
        let pod = Pod::of(variant);
        let config = pod.config();
        let budget = healthproxy::server::memory_budget(
            config.server.max_connections,
            config.checks.len(),
            config.grpc_listen.is_some(),
        );
        let limits = pod
            .sidecar
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let memory = &limits
            .get("memory")
            .unwrap_or_else(|| panic!("{variant}: a memory limit"))
            .0;
        let mib: u64 = memory
            .strip_suffix("Mi")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{variant}: memory limit {memory:?} in Mi"));
        assert_eq!(
            mib << 20,
            healthproxy::server::memory_limit(budget),
            "{variant}: a budget of {} MiB",
            budget >> 20
        );
    }
}

#[tokio::test]
async fn the_config_in_the_configmap_passes_check_config_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        // As the pod runs it: the Secret holding the token is mounted.
        let pod = Pod::of(variant);
        let path = dir.path().join(format!("{variant}.toml"));
        std::fs::write(
            &path,
            with_token_file(&pod.config_text(), &pod.token(), dir.path()),
        )
        .unwrap();
        let (code, stderr) =
            run_binary(&["check-config", path.to_str().unwrap()], Duration::from_secs(30)).await;
        assert_eq!(code, 0, "{variant}: {stderr}");
        assert_eq!(stderr, "", "{variant}: check-config warns");
    }
}

/// `config` with `drain.token_file` pointing at a file in `dir` holding
/// `token`.
fn with_token_file(config: &str, token: &str, dir: &Path) -> String {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    let mut table: toml::Table = config.parse().unwrap();
    let drain = table.get_mut("drain").and_then(|d| d.as_table_mut()).unwrap();
    drain.insert("token_file".into(), path.to_str().unwrap().into());
    toml::to_string(&table).unwrap()
}

/// The value of an unlabelled series in a Prometheus text scrape.
#[tokio::test]
async fn the_sidecar_running_the_configmap_serves_every_path_the_pod_asks_for() {
    for variant in VARIANTS {
        let pod = Pod::of(variant);
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(&with_token_file(&pod.config_text(), &pod.token(), dir.path()));
        let mut pre_stop = None;
        for (who, get) in pod.http_gets() {
            let path = path_of(&get);
            if path == "/prestop" {
                pre_stop = Some(get.clone());
                continue;
            }
            let status = proxy.get(path).await.status;
            // Nothing listens on the app's port here: the app's checks fail.
            let expected: &[u16] = if who.starts_with(SIDECAR) {
                &[200]
            } else {
                &[200, 503]
            };
            assert!(
                expected.contains(&status),
                "{variant}: {who} GET {path} -> {status}"
            );
        }
        let annotations = pod.annotations();
        let scrape_path = annotations.get("prometheus.io/path").expect("prometheus.io/path");
        let monitor = &pod.built.pod_monitors[0].spec.pod_metrics_endpoints[0];
        assert_eq!(&monitor.path, scrape_path, "{variant}");
        let scrape = proxy.get(scrape_path).await;
        assert_eq!(scrape.status, 200, "{variant}");
        assert_eq!(
            metric(&scrape.body, "healthproxy_draining"),
            Some(0.0),
            "{variant}"
        );

        // The preStop hook: refused without its token, draining with it.
        let get = pre_stop.expect("a preStop httpGet");
        assert_eq!(proxy.get("/prestop").await.status, 401, "{variant}");
        let headers: Vec<(String, String)> = get
            .http_headers
            .unwrap_or_default()
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        let addr = proxy.addr;
        let hook = tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            request(addr, "GET", "/prestop", &headers).await.status
        });
        eventually(
            Duration::from_secs(10),
            "the preStop hook starts a drain",
            || async { metric(&proxy.get("/metrics").await.body, "healthproxy_draining") == Some(1.0) },
        )
        .await;
        assert_eq!(
            proxy.get("/livez").await.status,
            200,
            "{variant}: liveness holds during a drain"
        );
        if hook.is_finished() {
            assert_eq!(hook.await.unwrap(), 200, "{variant}");
        } else {
            hook.abort();
        }
    }
}

#[test]
fn prometheus_and_the_kubelet_reach_the_sidecar_port() {
    for variant in VARIANTS {
        let pod = Pod::of(variant);
        let port = pod.config().listen.port();
        let labels = pod.labels();
        let selects = |selector: &Option<BTreeMap<String, String>>| {
            selector
                .as_ref()
                .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        };
        // Plain annotations.
        let annotations = pod.annotations();
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true")
        );
        assert_eq!(annotations.get("prometheus.io/port"), Some(&port.to_string()));
        // The PodMonitor: selects the pod, scrapes the sidecar's named port.
        let monitor = &pod.built.pod_monitors[0];
        assert!(
            selects(&monitor.spec.selector.match_labels),
            "{variant}: PodMonitor selects other pods"
        );
        for endpoint in &monitor.spec.pod_metrics_endpoints {
            let ports = pod.sidecar.ports.as_deref().unwrap_or_default();
            let named = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(endpoint.port.as_str()));
            let named =
                named.unwrap_or_else(|| panic!("{variant}: the sidecar has no port {}", endpoint.port));
            assert_eq!(named.container_port, i32::from(port), "{variant}");
        }
        // The NetworkPolicy: selects the pod, admits the app's port and,
        // from Prometheus, the sidecar's. The kubelet is on the pod's node,
        // which the NetworkPolicy API always admits.
        let policy = pod.built.network_policies[0].spec.as_ref().unwrap();
        assert!(
            selects(&policy.pod_selector.as_ref().and_then(|s| s.match_labels.clone())),
            "{variant}: the policy selects other pods"
        );
        let rules = policy.ingress.as_deref().unwrap_or_default();
        let admits = |port: i32| {
            rules.iter().filter(move |r| {
                r.ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|p| p.port == Some(IntOrString::Int(port)))
            })
        };
        for app_port in pod.app.ports.as_deref().unwrap_or_default() {
            assert!(
                admits(app_port.container_port).count() > 0,
                "{variant}: app port shut"
            );
        }
        let to_sidecar: Vec<_> = admits(i32::from(port)).collect();
        assert!(!to_sidecar.is_empty(), "{variant}: nothing reaches port {port}");
        for rule in to_sidecar {
            let from = rule.from.as_deref().unwrap_or_default();
            assert!(!from.is_empty(), "{variant}: port {port} is open to everyone");
            assert!(
                from.iter().all(|peer| {
                    let pods = peer.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref());
                    pods.is_some_and(|l| l.values().any(|v| v == "prometheus"))
                }),
                "{variant}: port {port} admits more than Prometheus: {from:?}"
            );
        }
    }
}

#[test]
fn the_prometheus_rule_carries_the_alerting_rules_and_passes_promtool() {
    let alerts = repo().join("deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&alerts).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the alerting rules (written with the metrics) are missing",
            alerts.display()
        )
    });
    let plain: Value = serde_yaml_ng::from_str(&text).unwrap();
    let groups = plain["groups"].as_array().expect("alerts.yml has groups");
    let built = build("prometheus");
    let [rule] = &built.prometheus_rules[..] else {
        panic!("deploy/prometheus: expected one PrometheusRule");
    };
    assert!(
        &rule.spec.groups == groups,
        "deploy/prometheus/prometheusrule.yaml differs from alerts.yml: copy its groups; they are\n{}",
        serde_yaml_ng::to_string(&plain["groups"]).unwrap()
    );
    // promtool reads the PrometheusRule's groups as a rules file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheusrule.yml");
    let spec = serde_json::to_value(&rule.spec).unwrap();
    std::fs::write(&file, serde_yaml_ng::to_string(&spec).unwrap()).unwrap();
    let out = run(
        Command::new(tool("promtool")).args(["check", "rules"]).arg(&file),
        Duration::from_secs(60),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let rules: usize = groups
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(said.contains(&format!("SUCCESS: {rules} rules found")), "{said}");
}

// === The Dockerfile and the image ===

/// One instruction of a Dockerfile, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The stages of the Dockerfile: (name, base, instructions after FROM).
fn dockerfile_stages() -> Vec<(String, String, Vec<Instruction>)> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                current.clear();
            }
        }
    }
    let mut stages: Vec<(String, String, Vec<Instruction>)> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<_> = instruction.args.split(' ').collect();
            let name = match words[..] {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => String::new(),
            };
            stages.push((name, words[0].to_string(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(instruction);
        }
    }
    stages
}

#[test]
fn the_dockerfile_passes_hadolint() {
    run(
        Command::new(tool("hadolint")).arg(repo().join("Dockerfile")),
        Duration::from_secs(60),
    );
}

#[test]
fn the_dockerfile_ends_in_a_scratch_image_of_the_static_binary_alone() {
    let stages = dockerfile_stages();
    let stage = |name: &str| {
        stages
            .iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"))
    };
    // The default (last) stage and `prebuilt` only add the binary to `runtime`.
    let last = stages.last().unwrap();
    assert_eq!(last.0, "image");
    for name in ["image", "prebuilt"] {
        let (_, base, instructions) = stage(name);
        assert_eq!(base, "runtime", "{name}");
        let [copy] = &instructions[..] else {
            panic!("{name}: one COPY, got {instructions:?}");
        };
        assert_eq!(copy.keyword, "COPY", "{name}");
        assert!(copy.args.ends_with(" /healthproxy"), "{name}: {copy:?}");
    }
    assert!(stage("image").2[0].args.starts_with("--from=build "));
    // The build stage links glibc statically.
    let build = stage("build");
    assert!(
        build
            .2
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("+crt-static"))
    );
    // The runtime: empty, non-root, probed through `healthproxy probe`.
    let (_, base, runtime) = stage("runtime");
    assert_eq!(base, "scratch");
    let one = |keyword: &str| {
        let found: Vec<_> = runtime.iter().filter(|i| i.keyword == keyword).collect();
        assert_eq!(found.len(), 1, "runtime: one {keyword}");
        found[0].args.clone()
    };
    let user = one("USER");
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric USER");
    assert_ne!(uid, 0);
    assert_eq!(one("ENTRYPOINT"), r#"["/healthproxy"]"#);
    let health = one("HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["/healthproxy", "probe", "http://127.0.0.1:9775/healthz"]"#),
        "{health}"
    );
    let cmd: Vec<String> = serde_json::from_str(&one("CMD")).unwrap();
    assert_eq!(cmd[..2], ["run", "--config"]);
    assert_eq!(
        Path::new(&cmd[2]),
        Pod::of("classic").config_path(),
        "the image's and the pods' config path"
    );
    let labels = one("LABEL");
    for key in ["title", "description", "version", "revision"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "no {key} label"
        );
    }
    let version = runtime
        .iter()
        .find(|i| i.keyword == "ARG" && i.args.starts_with("VERSION="));
    assert_eq!(
        version.map(|i| i.args.as_str()),
        Some(concat!("VERSION=", env!("CARGO_PKG_VERSION"))),
        "the image's default version label is the crate's"
    );
    // Nothing the build does not need is sent to it.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore: target"
    );
    assert!(ignore.lines().any(|l| l.trim() == ".git"), ".dockerignore: .git");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_static_binary_resolves_names_through_etc_hosts_as_documented() {
    // docs/deploying.md and the Dockerfile: static glibc reads /etc/hosts.
    // A root holding nothing but the binary, as the image, and a hosts
    // file; the binary's `probe` looks the name up in it.
    let app = crate::support::App::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(static_binary(), root.path().join("healthproxy")).unwrap();
    let url = format!("http://healthproxy-hosts-test:{}/healthz", app.addr.port());
    let probe = |root: PathBuf, url: String| async move {
        let output = tokio::process::Command::new(tool("chroot"))
            .arg(&root)
            .args(["/healthproxy", "probe", "--timeout", "5s", &url])
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .expect("the probe ends within its timeout")
            .unwrap()
    };
    let without = probe(root.path().into(), url.clone()).await;
    assert!(!without.status.success(), "no /etc/hosts, no name");
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/hosts"),
        "127.0.0.1 healthproxy-hosts-test\n",
    )
    .unwrap();
    let with = probe(root.path().into(), url).await;
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
}

/// The static release binary: `$HEALTHPROXY_STATIC_BINARY`, or
/// `target/static/TRIPLE/release/healthproxy`, built here when missing
/// (`.ci/install.d/deploy.sh` builds it before the tests, so that no test
/// competes with a release build for the CPU).
fn static_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HEALTHPROXY_STATIC_BINARY") {
        return path.into();
    }
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = repo().join("target/static");
    let path = target_dir.join(&triple).join("release/healthproxy");
    if !path.is_file() {
        eprintln!("building {} (a few minutes, once)", path.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(
            Command::new(cargo)
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--quiet",
                    "--no-default-features",
                    "--bin",
                    "healthproxy",
                ])
                .args(["--target", &triple, "--target-dir"])
                .arg(&target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env_remove("CARGO_TARGET_DIR")
                .current_dir(repo()),
            Duration::from_secs(30 * 60),
        );
    }
    let built = std::fs::metadata(&path).unwrap().modified().unwrap();
    if newest_source() > built {
        eprintln!(
            "note: {} is older than src/: .ci/install.d/deploy.sh rebuilds it",
            path.display()
        );
    }
    path
}

fn newest_source() -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path(), newest);
            } else {
                *newest = (*newest).max(meta.modified().unwrap());
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(&repo().join("src"), &mut newest);
    newest
}

/// Fails unless `binary` is linked statically: `ldd` finds no libraries and
/// the ELF file asks for no program interpreter.
fn assert_static(binary: &Path) {
    let out = Command::new(tool("ldd")).arg(binary).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "{}: ldd says {said}",
        binary.display()
    );
    assert!(!said.contains("=>"), "{}: ldd says {said}", binary.display());
    // ELF64 little-endian: no PT_INTERP (3) among the program headers.
    let elf = std::fs::read(binary).unwrap();
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "{}: not a 64-bit LE ELF",
        binary.display()
    );
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
    for i in 0..phnum {
        assert_ne!(
            u32_at(phoff + i * phentsize),
            3,
            "{}: has an interpreter",
            binary.display()
        );
    }
}

/// An image in podman's store, removed on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new(tool("podman"))
            .args(["rmi", "--force", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_builds_from_the_static_binary_and_holds_only_it() {
    let podman = tool("podman");
    let binary = static_binary();
    assert_static(&binary);
    let dir = tempfile::tempdir().unwrap();
    let context = dir.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::copy(&binary, context.join("healthproxy")).unwrap();
    let image = Image(format!(
        "localhost/healthproxy-deploy-test:{}",
        std::process::id()
    ));
    run(
        Command::new(&podman)
            .args([
                "build",
                "--pull=never",
                "--layers=false",
                "--format",
                "docker",
                "--target",
                "prebuilt",
            ])
            .args(["--build-arg", "REVISION=test", "--tag", &image.0, "--file"])
            .arg(repo().join("Dockerfile"))
            .arg(&context),
        Duration::from_secs(300),
    );
    let saved = dir.path().join("saved");
    run(
        Command::new(&podman)
            .args(["save", "--format", "docker-dir", "--output"])
            .arg(&saved)
            .arg(&image.0),
        Duration::from_secs(120),
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    let blob = |digest: &Value| saved.join(digest.as_str().unwrap().trim_start_matches("sha256:"));
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest["config"]["digest"])).unwrap()).unwrap();
    let config = &config["config"];

    // Non-root, numeric; the binary as entrypoint, the pods' config path as
    // its default argument; probed through `healthproxy probe`.
    let user = config["User"].as_str().unwrap();
    let uid: u32 = user.split(':').next().unwrap().parse().expect("a numeric user");
    assert_ne!(uid, 0, "{user}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/healthproxy"]));
    let config_path = Pod::of("classic").config_path();
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["run", "--config", config_path.to_str().unwrap()])
    );
    let port = Pod::of("classic").config().listen.port();
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!([
            "CMD",
            "/healthproxy",
            "probe",
            format!("http://127.0.0.1:{port}/healthz")
        ])
    );
    assert!(
        config["ExposedPorts"].get(format!("{port}/tcp")).is_some(),
        "{config}"
    );
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.revision"], "test");
    assert_eq!(labels["org.opencontainers.image.title"], "healthproxy");

    // One file in all its layers: the binary, read-only and executable.
    // (Without cached layers, podman commits the metadata-only stage as an
    // empty layer.)
    let mut entries = Vec::new();
    let mut layer_with_binary = None;
    for layer in manifest["layers"].as_array().unwrap() {
        let layer = blob(&layer["digest"]);
        let listing = run(
            Command::new(tool("tar")).arg("-tvf").arg(&layer),
            Duration::from_secs(60),
        );
        let listing = String::from_utf8(listing.stdout).unwrap();
        if !listing.trim().is_empty() {
            layer_with_binary = Some(layer);
        }
        entries.extend(listing.lines().map(str::to_string));
    }
    assert_eq!(
        entries.len(),
        1,
        "the image holds more than the binary: {entries:#?}"
    );
    assert!(entries[0].starts_with("-r-xr-xr-x "), "{entries:?}");
    assert!(entries[0].ends_with(" healthproxy"), "{entries:?}");
    let layer = layer_with_binary.unwrap();

    // The binary in it is static, and serves when started outside.
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run(
        Command::new(tool("tar"))
            .arg("-xf")
            .arg(&layer)
            .arg("-C")
            .arg(&unpacked),
        Duration::from_secs(60),
    );
    let inside = unpacked.join("healthproxy");
    assert_static(&inside);
    let version = run(Command::new(&inside).arg("--version"), Duration::from_secs(10));
    // The revision is the commit the static binary was built at, which may
    // be older than this test's when the sources have not changed since.
    let version = String::from_utf8(version.stdout).unwrap();
    let version = version.trim();
    assert!(
        version.starts_with(concat!("healthproxy ", env!("CARGO_PKG_VERSION"), " (revision "))
            && version.ends_with(&format!(", rustc {})", healthproxy::version::RUSTC_VERSION)),
        "{version}"
    );
    let pod = Pod::of("classic");
    let config_file = dir.path().join("config.toml");
    std::fs::write(
        &config_file,
        with_token_file(&pod.config_text(), &pod.token(), dir.path()),
    )
    .unwrap();
    let proxy = Proxy::spawn(&inside, &config_file);
    let addr = proxy.addr;
    assert_eq!(request(addr, "GET", "/healthz", &[]).await.status, 200);
    let metrics = request(addr, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metric(&metrics.body, "healthproxy_draining"), Some(0.0));
    // What HEALTHCHECK runs, against it.
    let probe = run(
        Command::new(&inside).args(["probe", &format!("http://{addr}/healthz")]),
        Duration::from_secs(10),
    );
    assert!(probe.status.success());
}

/// deploy/webhook: the webhook fails open, is opted into, survives a node
/// drain and runs hardened; its certificate is the one it mounts.
fn check_webhook(built: &Built, cert_manager: bool) {
    let what = &built.dir;
    assert_eq!(built.deployments.len(), 1, "{what}");
    let deployment = &built.deployments[0];
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "{what}");
    let labels = spec.selector.match_labels.clone().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    let anti = pod.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(term.pod_affinity_term.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        term.pod_affinity_term
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels,
        Some(labels.clone())
    );
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "it reads nothing from the API"
    );
    let container = &pod.containers[0];
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let args = container.args.clone().unwrap();
    assert_eq!(args[0], "webhook");
    let mount = &container.volume_mounts.as_ref().unwrap()[0];
    for flag in ["--tls-cert=", "--tls-key="] {
        let file = args.iter().find_map(|a| a.strip_prefix(flag)).unwrap();
        assert!(file.starts_with(&format!("{}/", mount.mount_path)), "{file}");
    }
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume.secret.as_ref().unwrap().secret_name.clone().unwrap();
    let probe = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));

    assert_eq!(built.disruption_budgets.len(), 1, "{what}");
    let pdb = built.disruption_budgets[0].spec.as_ref().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert_eq!(pdb.selector.as_ref().unwrap().match_labels, Some(labels.clone()));

    let service = &built.services[0];
    let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.target_port, Some(IntOrString::String("https".into())));
    let https = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .unwrap();
    assert!(
        args.contains(&format!("--listen=[::]:{}", https.container_port)),
        "{args:?}"
    );
    assert_eq!(service.spec.as_ref().unwrap().selector, Some(labels.clone()));
    assert_eq!(built.network_policies.len(), 1, "{what}");

    let config = &built.mutating_webhooks[0];
    let annotations = config.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.contains_key("cert-manager.io/inject-ca-from"),
        cert_manager,
        "{what}"
    );
    let webhooks = config.webhooks.as_ref().unwrap();
    assert_eq!(webhooks.len(), 2);
    for webhook in webhooks {
        assert_eq!(
            webhook.failure_policy.as_deref(),
            Some("Ignore"),
            "never block pod creation"
        );
        assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(webhook.side_effects, "None");
        assert_eq!(webhook.admission_review_versions, vec!["v1".to_string()]);
        let client = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(client.path.as_deref(), Some("/mutate"));
        assert_eq!(client.name, service.metadata.name.clone().unwrap());
        assert_eq!(Some(client.namespace.clone()), service.metadata.namespace);
        assert_eq!(client.port, Some(port.port));
        let rule = &webhook.rules.as_ref().unwrap()[0];
        assert_eq!(rule.operations, Some(vec!["CREATE".to_string()]));
        assert_eq!(rule.resources, Some(vec!["pods".to_string()]));
        assert_eq!(webhook.client_config.ca_bundle.is_some(), !cert_manager, "{what}");
        // The webhook's own namespace is never injected.
        let ns = webhook.namespace_selector.as_ref().unwrap();
        assert!(ns.match_expressions.as_ref().unwrap().iter().any(|e| {
            e.key == "kubernetes.io/metadata.name"
                && e.operator == "NotIn"
                && e.values
                    .as_ref()
                    .unwrap()
                    .contains(&service.metadata.namespace.clone().unwrap())
        }));
    }
    let [by_namespace, by_pod] = &webhooks[..] else {
        unreachable!()
    };
    let enabled = BTreeMap::from([("healthproxy.io/inject".to_string(), "enabled".to_string())]);
    assert_eq!(
        by_namespace.namespace_selector.as_ref().unwrap().match_labels,
        Some(enabled.clone())
    );
    assert_eq!(
        by_pod.object_selector.as_ref().unwrap().match_labels,
        Some(enabled)
    );

    if cert_manager {
        let certificate = built
            .cert_manager
            .iter()
            .find(|o| o.kind == "Certificate")
            .unwrap();
        assert_eq!(certificate.spec.secret_name.as_ref(), Some(&secret));
        let dns = format!(
            "{}.{}.svc",
            service.metadata.name.clone().unwrap(),
            service.metadata.namespace.clone().unwrap()
        );
        assert!(certificate.spec.dns_names.as_ref().unwrap().contains(&dns));
        let injected_from = format!(
            "{}/{}",
            certificate.metadata.namespace.clone().unwrap(),
            certificate.metadata.name.clone().unwrap()
        );
        assert_eq!(annotations["cert-manager.io/inject-ca-from"], injected_from);
    } else {
        assert!(built.cert_manager.is_empty(), "{what}");
        let tls = built
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(&secret))
            .unwrap();
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    }
}

#[test]
fn the_webhook_fails_open_is_opted_into_and_runs_hardened_with_cert_manager() {
    check_webhook(&build("webhook"), true);
}

#[tokio::test]
async fn the_webhook_runs_with_the_ca_make_ca_sh_makes_without_cert_manager() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("webhook");
    run(
        Command::new(repo().join("deploy/webhook/make-ca.sh")).arg(&out),
        Duration::from_secs(60),
    );
    let text = run(
        Command::new(tool("kubectl")).arg("kustomize").arg(&out),
        Duration::from_secs(60),
    )
    .stdout;
    let objects = serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&text).unwrap())
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .map(|mut doc| {
            // kustomize wraps a generated Secret's base64 at 76 columns;
            // the API server's decoder skips the line breaks,
            // k8s-openapi's does not.
            if let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut) {
                for value in data.values_mut() {
                    *value = value.as_str().unwrap().replace('\n', "").into();
                }
            }
            doc
        })
        .collect();
    let built = built_from("make-ca.sh's kustomization", objects);
    check_webhook(&built, false);
    // The caBundle is the CA that signed the serving certificate, and the
    // real webhook serves with that key pair.
    let bundle = built.mutating_webhooks[0].webhooks.as_ref().unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap();
    assert_eq!(bundle.0, std::fs::read(out.join("ca.crt")).unwrap());
    let tls = built
        .secrets
        .iter()
        .find(|s| s.type_.as_deref() == Some("kubernetes.io/tls"))
        .unwrap();
    let data = tls.data.clone().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &data["tls.crt"].0).unwrap();
    std::fs::write(&key, &data["tls.key"].0).unwrap();
    run(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(out.join("ca.crt"))
            .arg(&cert),
        Duration::from_secs(10),
    );
    let mut webhook = std::process::Command::new(crate::support::binary())
        .args([
            "webhook",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(webhook.stderr.take().unwrap()));
    // The first lines: the placeholder image's warning, then serving.
    let first: Vec<String> = lines.by_ref().take(2).map(Result::unwrap).collect();
    let _ = webhook.kill();
    let _ = webhook.wait();
    assert!(
        first[0].contains("is a placeholder that no cluster can pull"),
        "{first:?}"
    );
    assert!(first[1].contains("healthproxy webhook serving"), "{first:?}");
}

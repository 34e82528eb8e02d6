//! What `inject` writes into `[drain]` from the rest of the pod and of the
//! stream: the mesh whose proxy forwards the app's traffic (`drain.mesh`),
//! and the app's serving ports (`drain.ports`).
//!
//! - **The mesh** is the pod's own: Istio's `istio-proxy` or Linkerd's
//!   `linkerd-proxy` container (classic, or native in `initContainers`),
//!   else the injection asked for by the pod template
//!   (`sidecar.istio.io/inject: "true"`, label or annotation;
//!   `linkerd.io/inject: enabled|ingress`), else by its Namespace when the
//!   stream holds it (label `istio-injection: enabled` or `istio.io/rev`;
//!   annotation `linkerd.io/inject`), a pod's `false`/`disabled` winning.
//!   `--mesh` overrides all of it (a Namespace labelled in the cluster is
//!   invisible here).
//! - **The serving ports** are those a Service of the same stream and
//!   namespace targets, when one selects the pod: the traffic a drain
//!   waits for comes through Services. Without one, the probed ports: the
//!   ones the kubelet was told the app serves on. Other declared ports (a
//!   metrics port, a cache the app talks to over loopback) are left out.

use serde_yaml_ng::{Mapping, Value};

use crate::config::{ISTIO_PROXY_UID, LINKERD_PROXY_UID, Mesh};

/// Istio's sidecar container.
pub(crate) const ISTIO_PROXY: &str = "istio-proxy";
/// Linkerd's sidecar container.
pub(crate) const LINKERD_PROXY: &str = "linkerd-proxy";

/// Which mesh `inject` writes into `drain.mesh` (`--mesh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MeshChoice {
    /// The one the pod (or its Namespace in the stream) shows.
    #[default]
    Auto,
    /// No mesh, whatever the pod shows.
    None,
    /// Istio's sidecar.
    Istio,
    /// Linkerd's proxy.
    Linkerd,
}

/// The objects of the stream beside the workloads that say something
/// about their pods: Services and Namespaces.
#[derive(Debug, Clone, Default)]
pub struct Surroundings {
    services: Vec<Value>,
    namespaces: Vec<Value>,
}

impl Surroundings {
    /// Takes in `object` if it is a Service or a Namespace.
    pub(crate) fn add(&mut self, object: &Value) {
        match object.get("kind").and_then(Value::as_str) {
            Some("Service") => self.services.push(object.clone()),
            Some("Namespace") => self.namespaces.push(object.clone()),
            _ => {}
        }
    }
}

/// A field of `metadata.labels` or `metadata.annotations` of `object`.
fn meta<'a>(object: &'a Value, map: &str, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get(map)?.get(key)?.as_str()
}

/// The pod's containers of both lists.
fn containers(template: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |list| {
            template
                .get("spec")
                .and_then(|s| s.get(list))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
        })
}

fn container<'a>(template: &'a Value, name: &str) -> Option<&'a Value> {
    containers(template).find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

fn run_as_user(container: &Value) -> Option<u32> {
    let uid = container.get("securityContext")?.get("runAsUser")?.as_u64()?;
    u32::try_from(uid).ok().filter(|u| *u != 0)
}

/// What the pod template and its Namespace say of one mesh: `Some(true)`
/// in it, `Some(false)` kept out, `None` silent; with the reason.
fn istio(template: &Value, namespace: Option<&Value>) -> (Option<bool>, String) {
    if let Some(c) = container(template, ISTIO_PROXY) {
        let native = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        let kind = if native { "native" } else { "classic" };
        return (Some(true), format!("its {kind} {ISTIO_PROXY} container"));
    }
    for map in ["labels", "annotations"] {
        match meta(template, map, "sidecar.istio.io/inject") {
            Some("true") => return (Some(true), format!("sidecar.istio.io/inject: \"true\" ({map})")),
            Some("false") => return (Some(false), String::new()),
            _ => {}
        }
    }
    if let Some(ns) = namespace {
        if meta(ns, "labels", "istio-injection") == Some("enabled") {
            return (Some(true), "its Namespace's istio-injection: enabled".into());
        }
        if meta(ns, "labels", "istio.io/rev").is_some() {
            return (Some(true), "its Namespace's istio.io/rev".into());
        }
    }
    (None, String::new())
}

fn linkerd(template: &Value, namespace: Option<&Value>) -> (Option<bool>, String) {
    if let Some(c) = container(template, LINKERD_PROXY) {
        let native = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        let kind = if native { "native" } else { "classic" };
        return (Some(true), format!("its {kind} {LINKERD_PROXY} container"));
    }
    match meta(template, "annotations", "linkerd.io/inject") {
        Some(v @ ("enabled" | "ingress")) => return (Some(true), format!("linkerd.io/inject: {v}")),
        Some("disabled") => return (Some(false), String::new()),
        _ => {}
    }
    if let Some(ns) = namespace
        && let Some(v @ ("enabled" | "ingress")) = meta(ns, "annotations", "linkerd.io/inject")
    {
        return (Some(true), format!("its Namespace's linkerd.io/inject: {v}"));
    }
    (None, String::new())
}

/// A pod that shows two meshes: `--mesh` must choose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pod shows two meshes, Istio ({istio}) and Linkerd ({linkerd}): choose with --mesh")]
pub(crate) struct TwoMeshes {
    /// Where Istio shows.
    pub(crate) istio: String,
    /// Where Linkerd shows.
    pub(crate) linkerd: String,
}

/// The mesh of a pod template in `namespace`, and why; an error when it
/// shows two.
pub(crate) fn mesh(
    template: &Value,
    namespace: Option<&str>,
    around: &Surroundings,
    choice: MeshChoice,
) -> Result<(Mesh, String), TwoMeshes> {
    let ns = around.namespaces.iter().find(|n| {
        namespace.is_some()
            && n.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                == namespace
    });
    let istio_uid = || {
        container(template, ISTIO_PROXY)
            .and_then(run_as_user)
            .unwrap_or(ISTIO_PROXY_UID)
    };
    let linkerd_uid = || {
        meta(template, "annotations", "config.linkerd.io/proxy-uid")
            .and_then(|u| u.parse().ok())
            .filter(|u| *u != 0)
            .or_else(|| container(template, LINKERD_PROXY).and_then(run_as_user))
            .unwrap_or(LINKERD_PROXY_UID)
    };
    let chosen = |mesh: Mesh| (mesh, format!("{} (--mesh)", mesh.name()));
    match choice {
        MeshChoice::None => return Ok(chosen(Mesh::None)),
        MeshChoice::Istio => {
            return Ok(chosen(Mesh::Istio {
                proxy_uid: istio_uid(),
            }));
        }
        MeshChoice::Linkerd => {
            return Ok(chosen(Mesh::Linkerd {
                proxy_uid: linkerd_uid(),
            }));
        }
        MeshChoice::Auto => {}
    }
    let ((in_istio, istio_why), (in_linkerd, linkerd_why)) = (istio(template, ns), linkerd(template, ns));
    match (in_istio == Some(true), in_linkerd == Some(true)) {
        (true, true) => Err(TwoMeshes {
            istio: istio_why,
            linkerd: linkerd_why,
        }),
        (true, false) => Ok((
            Mesh::Istio {
                proxy_uid: istio_uid(),
            },
            format!("istio, from {istio_why}"),
        )),
        (false, true) => Ok((
            Mesh::Linkerd {
                proxy_uid: linkerd_uid(),
            },
            format!("linkerd, from {linkerd_why}"),
        )),
        (false, false) => Ok((Mesh::None, "none: no mesh in the pod or the stream".into())),
    }
}

/// The serving ports of a pod template in `namespace` with the `probed`
/// ports, and why.
pub(crate) fn ports(
    template: &Value,
    namespace: Option<&str>,
    around: &Surroundings,
    probed: &[u16],
) -> (Vec<u16>, String) {
    let labels = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_mapping);
    let mut ports = Vec::new();
    let mut by = Vec::new();
    for service in &around.services {
        let ns = service
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        if ns != namespace || !selects(service, labels) {
            continue;
        }
        let name = service
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        by.push(format!("Service {name}"));
        let list = service
            .get("spec")
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_sequence);
        for p in list.into_iter().flatten() {
            if p.get("protocol")
                .is_some_and(|proto| proto.as_str() != Some("TCP"))
            {
                continue;
            }
            let target = match p.get("targetPort").or_else(|| p.get("port")) {
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Some(Value::String(s)) => s.parse().ok().or_else(|| named_port(template, s)),
                _ => None,
            };
            ports.extend(target.filter(|p| *p != 0));
        }
    }
    let why = if by.is_empty() {
        ports = probed.to_vec();
        "the probed ports: no Service in the stream selects the pod".to_string()
    } else {
        format!("the ports {} targets", by.join(", "))
    };
    ports.sort_unstable();
    ports.dedup();
    (ports, why)
}

/// Whether `service`'s selector (non-empty) is part of `labels`.
fn selects(service: &Value, labels: Option<&Mapping>) -> bool {
    let Some(selector) = service
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(Value::as_mapping)
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The container port named `name` in the pod, as a Service's
/// `targetPort` names it.
fn named_port(template: &Value, name: &str) -> Option<u16> {
    containers(template)
        .flat_map(|c| c.get("ports").and_then(Value::as_sequence).into_iter().flatten())
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

/// The declared TCP container ports of the app containers: what
/// `drain.ports` held before it was chosen.
pub(crate) fn declared(template: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = template
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter(|c| {
            let name = c.get("name").and_then(Value::as_str);
            name != Some(ISTIO_PROXY) && name != Some(LINKERD_PROXY)
        })
        .flat_map(|c| c.get("ports").and_then(Value::as_sequence).into_iter().flatten())
        .filter(|p| {
            p.get("protocol")
                .is_none_or(|proto| proto.as_str() == Some("TCP"))
        })
        .filter_map(|p| {
            p.get("containerPort")?
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    const POD: &str = "metadata:\n  labels: {app: web}\nspec:\n  containers:\n  - name: app\n    ports:\n    - {name: http, containerPort: 8080}\n    - {name: metrics, containerPort: 9090}\n    - {containerPort: 6379}\n";

    fn around(objects: &[&str]) -> Surroundings {
        let mut s = Surroundings::default();
        objects.iter().for_each(|o| s.add(&value(o)));
        s
    }

    #[test]
    fn a_services_target_ports_are_the_serving_ports() {
        let pod = value(POD);
        let svc = "kind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http}\n  - {port: 81, targetPort: 8443}\n  - {port: 53, protocol: UDP}\n";
        let (ports, why) = ports(&pod, None, &around(&[svc]), &[9090]);
        assert_eq!(ports, [8080, 8443]);
        assert_eq!(why, "the ports Service web targets");
        // Another namespace's, or one selecting other pods: not this pod's.
        let other = "kind: Service\nmetadata: {name: web, namespace: prod}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
        let api =
            "kind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{port: 80}]\n";
        let (ports, why) = super::ports(&pod, None, &around(&[other, api]), &[9090]);
        assert_eq!(ports, [9090]);
        assert!(why.starts_with("the probed ports"), "{why}");
        let (ports, _) = super::ports(&pod, Some("prod"), &around(&[other]), &[9090]);
        assert_eq!(ports, [80], "no targetPort: the port");
        assert_eq!(declared(&pod), [6379, 8080, 9090]);
    }

    #[test]
    fn the_mesh_is_the_pods_container_then_its_annotations_then_its_namespace() {
        let auto = |pod: &str, ns: &[&str]| mesh(&value(pod), Some("shop"), &around(ns), MeshChoice::Auto);
        let istio = "spec:\n  initContainers:\n  - {name: istio-proxy, restartPolicy: Always}\n  containers: [{name: app}]\n";
        assert_eq!(
            auto(istio, &[]).unwrap(),
            (
                Mesh::Istio { proxy_uid: 1337 },
                "istio, from its native istio-proxy container".into()
            )
        );
        let linkerd = "metadata:\n  annotations: {linkerd.io/inject: enabled, config.linkerd.io/proxy-uid: \"2500\"}\nspec:\n  containers: [{name: app}]\n";
        assert_eq!(auto(linkerd, &[]).unwrap().0, Mesh::Linkerd { proxy_uid: 2500 });
        let classic = "spec:\n  containers:\n  - {name: app}\n  - {name: linkerd-proxy, securityContext: {runAsUser: 2103}}\n";
        assert_eq!(
            auto(classic, &[]).unwrap(),
            (
                Mesh::Linkerd { proxy_uid: 2103 },
                "linkerd, from its classic linkerd-proxy container".into()
            )
        );
        let plain = "spec:\n  containers: [{name: app}]\n";
        let ns = "kind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n";
        assert_eq!(auto(plain, &[ns]).unwrap().0, Mesh::Istio { proxy_uid: 1337 });
        assert_eq!(auto(plain, &[]).unwrap().0, Mesh::None);
        let out =
            "metadata:\n  labels: {sidecar.istio.io/inject: \"false\"}\nspec:\n  containers: [{name: app}]\n";
        assert_eq!(auto(out, &[ns]).unwrap().0, Mesh::None, "the pod opts out");
        let both = "metadata:\n  annotations: {linkerd.io/inject: enabled}\nspec:\n  containers: [{name: app}, {name: istio-proxy}]\n";
        assert!(auto(both, &[]).unwrap_err().to_string().contains("--mesh"));
        let chosen = mesh(&value(both), None, &around(&[]), MeshChoice::Istio).unwrap();
        assert_eq!(chosen, (Mesh::Istio { proxy_uid: 1337 }, "istio (--mesh)".into()));
    }
}

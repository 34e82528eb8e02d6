//! `healthproxy webhook`: a mutating admission webhook that applies
//! `inject`'s transformation to every opted-in pod as it is created.
//!
//! - this module: one AdmissionReview in, one out ([`review`]), and the
//!   decision for one pod ([`mutate`]), which calls
//!   [`inject::template::inject`](crate::inject::template::inject) — the
//!   same function `healthproxy inject` calls, so the two cannot disagree.
//! - [`tls`]: the key pair, re-read from its files when they change.
//! - [`serve`]: HTTPS for the API server, plain HTTP for `/healthz` and
//!   `/metrics`.
//!
//! A webhook cannot create the ConfigMap and Secret `inject` writes beside
//! a workload: the config and the token travel in the pod's own
//! annotations ([`CONFIG_ANNOTATION`], [`TOKEN_ANNOTATION`]), which
//! `downwardAPI` volumes of the same names as `inject`'s project into the
//! sidecar's filesystem at the same paths.

pub mod serve;
pub mod tls;

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::inject::template::{self, CONFIG_VOLUME, Injected, TOKEN_VOLUME};
use crate::inject::{Options, WORKLOADS, Workload, record};

/// The label (on a namespace or a pod) or annotation (on a pod) that opts
/// in with `enabled`; any other value on the pod opts it out.
pub const OPT: &str = "healthproxy.io/inject";
/// The value of [`OPT`] that opts in.
pub const ENABLED: &str = "enabled";
/// The pod annotation holding the sidecar's config file.
pub const CONFIG_ANNOTATION: &str = "healthproxy.io/config";
/// The pod annotation holding the token of the preStop hooks.
pub const TOKEN_ANNOTATION: &str = "healthproxy.io/token";

/// What the webhook did with one admission request, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The pod got the sidecar.
    Injected,
    /// The pod opts out by label or annotation.
    OptedOut,
    /// The pod already has the sidecar (`inject` or an earlier call).
    AlreadyInjected,
    /// No probe the sidecar can take over.
    NoProbes,
    /// `inject` refused the pod: admitted unchanged, with a warning.
    Refused,
    /// Not the creation of a pod.
    NotApplicable,
    /// The request could not be read: 400.
    BadRequest,
}

impl Outcome {
    /// Every outcome, for the metrics.
    pub const ALL: [Outcome; 7] = [
        Outcome::Injected,
        Outcome::OptedOut,
        Outcome::AlreadyInjected,
        Outcome::NoProbes,
        Outcome::Refused,
        Outcome::NotApplicable,
        Outcome::BadRequest,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::OptedOut => "opted_out",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::NoProbes => "no_probes",
            Outcome::Refused => "refused",
            Outcome::NotApplicable => "not_applicable",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// The decision for one pod.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// What happened.
    pub outcome: Outcome,
    /// The JSONPatch, when the pod changes.
    pub patch: Option<json_patch::Patch>,
    /// For the client that creates the pod (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// Answers one AdmissionReview (the body of a `POST /mutate`). An error is
/// a body that is not an AdmissionReview with a request: the caller
/// answers 400 with it. Everything else is allowed.
pub fn review(body: &[u8], options: &Options) -> Result<(Value, Outcome), String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "an AdmissionReview without a request".to_string())?;
    let mut response = AdmissionResponse::from(&request);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or("").is_empty();
    let mutation = match &request.object {
        Some(object) if is_pod_create => {
            let pod = serde_json::to_value(object).map_err(|e| format!("the pod: {e}"))?;
            mutate(&pod, request.namespace.as_deref(), options)
        }
        _ => Mutation {
            outcome: Outcome::NotApplicable,
            patch: None,
            warnings: Vec::new(),
        },
    };
    if let Some(patch) = mutation.patch {
        response = response
            .with_patch(patch)
            .map_err(|e| format!("the patch: {e}"))?;
    }
    if !mutation.warnings.is_empty() {
        response.warnings = Some(mutation.warnings);
    }
    let answer = serde_json::to_value(response.into_review()).map_err(|e| e.to_string())?;
    Ok((answer, mutation.outcome))
}

/// The decision for `pod` (as the API server sends it) in `namespace`.
pub fn mutate(pod: &Value, namespace: Option<&str>, options: &Options) -> Mutation {
    let unchanged = |outcome, warnings| Mutation {
        outcome,
        patch: None,
        warnings,
    };
    let meta = |field: &str| pod.get("metadata").and_then(|m| m.get(field));
    let opt = [meta("labels"), meta("annotations")]
        .into_iter()
        .flatten()
        .find_map(|map| map.get(OPT).and_then(Value::as_str));
    if opt.is_some_and(|v| v != ENABLED) {
        return unchanged(Outcome::OptedOut, Vec::new());
    }
    if meta("annotations").is_some_and(|a| a.get(record::ANNOTATION).is_some()) {
        return unchanged(Outcome::AlreadyInjected, Vec::new());
    }
    let workload = workload_of(pod, namespace);
    let mut changed = match serde_yaml_ng::to_value(pod) {
        Ok(v) => v,
        Err(e) => {
            return unchanged(
                Outcome::Refused,
                vec![format!("healthproxy: not injected: the pod: {e}")],
            );
        }
    };
    let injection = match template::inject(&mut changed, &workload, options, None) {
        Err(refusal) => {
            return unchanged(
                Outcome::Refused,
                vec![format!("healthproxy: not injected: {refusal}")],
            );
        }
        Ok(Injected::Unchanged { warnings }) => return unchanged(Outcome::NoProbes, warnings),
        Ok(Injected::Changed(injection)) => injection,
    };
    let mut changed = match serde_json::to_value(&changed) {
        Ok(v) => v,
        Err(e) => {
            return unchanged(Outcome::Refused, vec![format!("healthproxy: not injected: {e}")]);
        }
    };
    carry_in_annotations(&mut changed, &injection.config, injection.token.as_deref());
    Mutation {
        outcome: Outcome::Injected,
        patch: Some(json_patch::diff(pod, &changed)),
        warnings: injection.warnings,
    }
}

/// Moves the config and the token from the ConfigMap and Secret `inject`
/// refers to into `pod`'s annotations: its volumes of the same names
/// become `downwardAPI` volumes that project them to the same files.
pub fn carry_in_annotations(pod: &mut Value, config: &str, token: Option<&str>) {
    let annotations = &mut pod["metadata"]["annotations"];
    annotations[CONFIG_ANNOTATION] = config.into();
    if let Some(token) = token {
        annotations[TOKEN_ANNOTATION] = token.into();
    }
    let Some(volumes) = pod["spec"]["volumes"].as_array_mut() else {
        return;
    };
    for volume in volumes {
        let (annotation, file) = match volume["name"].as_str() {
            Some(CONFIG_VOLUME) => (CONFIG_ANNOTATION, "config.toml"),
            Some(TOKEN_VOLUME) => (TOKEN_ANNOTATION, "token"),
            _ => continue,
        };
        *volume = json!({
            "name": volume["name"],
            "downwardAPI": {"items": [{
                "path": file,
                "fieldRef": {"fieldPath": format!("metadata.annotations['{annotation}']")},
            }]},
        });
    }
}

/// The workload `inject` would have been given for `pod`: its controller
/// when `inject` knows the kind (a Job's classic sidecar must exit with
/// the app), else the pod itself, named by `generateName` when the API
/// server has not named it yet.
pub fn workload_of(pod: &Value, namespace: Option<&str>) -> Workload {
    let meta = &pod["metadata"];
    let namespace = namespace
        .or_else(|| meta["namespace"].as_str())
        .filter(|ns| !ns.is_empty())
        .map(str::to_string);
    let controller = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true);
    if let Some(owner) = controller
        && let (Some(kind), Some(name)) = (owner["kind"].as_str(), owner["name"].as_str())
        && WORKLOADS.iter().any(|(k, _)| *k == kind)
    {
        return Workload {
            kind: kind.into(),
            name: name.into(),
            namespace,
        };
    }
    let name = meta["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| meta["generateName"].as_str().map(|g| g.trim_end_matches('-')))
        .unwrap_or("pod");
    Workload {
        kind: "Pod".into(),
        name: name.into(),
        namespace,
    }
}

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
pub(crate) mod tls;

use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::inject::template::{self, CONFIG_VOLUME, Injected, TOKEN_VOLUME};
use crate::inject::{Options, WORKLOADS, Workload, record};

/// The label (on a namespace or a pod) or annotation (on a pod) that opts
/// in with `enabled`; any other value on the pod opts it out.
pub(crate) const OPT: &str = "healthproxy.io/inject";
/// The value of [`OPT`] that opts in.
pub(crate) const ENABLED: &str = "enabled";
/// The pod annotation holding the sidecar's config file.
pub(crate) const CONFIG_ANNOTATION: &str = "healthproxy.io/config";
/// The pod annotation holding the token of the preStop hooks.
pub(crate) const TOKEN_ANNOTATION: &str = "healthproxy.io/token";

/// The most containers (`containers` and `initContainers` together) of a
/// pod the webhook injects; a larger pod is admitted unchanged with a
/// warning, before any work. The sidecar's config, carried in an
/// annotation, grows with them, and would pass the API server's limit on
/// annotations well before this.
pub const MAX_CONTAINERS: usize = 256;
/// The API server's limit on the total size of a pod's annotations (keys
/// and values): past it, it would reject the injected pod.
pub(crate) const MAX_ANNOTATIONS: usize = 256 << 10;
/// The largest JSONPatch answered; the answer carries it in base64 (4/3 of
/// its size) with the warnings.
pub(crate) const MAX_PATCH: usize = 1 << 20;
/// The most warnings in one answer (the API server may truncate more).
const MAX_WARNINGS: usize = 32;

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
    pub(crate) const ALL: [Outcome; 7] = [
        Outcome::Injected,
        Outcome::OptedOut,
        Outcome::AlreadyInjected,
        Outcome::NoProbes,
        Outcome::Refused,
        Outcome::NotApplicable,
        Outcome::BadRequest,
    ];

    /// The `result` label.
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) outcome: Outcome,
    /// The JSONPatch, when the pod changes.
    pub patch: Option<json_patch::Patch>,
    /// For the client that creates the pod (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// Answers one AdmissionReview (the body of a `POST /mutate`). An error is
/// a body that is not an AdmissionReview with a request: the caller
/// answers 400 with it. Everything else is allowed.
///
/// The answer's patch is base64 text, as the AdmissionReview API has it
/// (kube-core writes its bytes as a JSON array of numbers, 4.4 MB for a
/// patch of 1.3 MB): the answer is 4/3 of the patch and a few hundred
/// bytes, and the patch at most [`MAX_PATCH`].
pub fn review(body: &[u8], options: &Options) -> Result<(Value, Outcome), String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| "an AdmissionReview without a request".to_string())?;
    let response = AdmissionResponse::from(&request);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or("").is_empty();
    let mut mutation = match &request.object {
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
    if mutation.warnings.len() > MAX_WARNINGS {
        let more = mutation.warnings.len() - (MAX_WARNINGS - 1);
        mutation.warnings.truncate(MAX_WARNINGS - 1);
        mutation
            .warnings
            .push(format!("healthproxy: and {more} more warnings"));
    }
    let mut answer = serde_json::to_value(response.into_review()).map_err(|e| e.to_string())?;
    let fields = answer["response"]
        .as_object_mut()
        .ok_or("the answer has no response")?;
    if let Some(patch) = &mutation.patch {
        let bytes = serde_json::to_vec(patch).map_err(|e| format!("the patch: {e}"))?;
        fields.insert("patchType".into(), "JSONPatch".into());
        fields.insert("patch".into(), base64(&bytes).into());
    }
    if !mutation.warnings.is_empty() {
        fields.insert("warnings".into(), mutation.warnings.into());
    }
    Ok((answer, mutation.outcome))
}

/// Standard base64 with padding (RFC 4648 §4), as Go's encoding/json
/// writes and reads a `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The decision for `pod` (as the API server sends it) in `namespace`.
///
/// Linear in the pod's size; a pod of more than [`MAX_CONTAINERS`]
/// containers, whose injection would make annotations over
/// [`MAX_ANNOTATIONS`] bytes, or whose patch would be over [`MAX_PATCH`]
/// bytes, is admitted unchanged with a warning saying which.
pub fn mutate(pod: &Value, namespace: Option<&str>, options: &Options) -> Mutation {
    let unchanged = |outcome, warnings| Mutation {
        outcome,
        patch: None,
        warnings,
    };
    let refused = |why: String| Mutation {
        outcome: Outcome::Refused,
        patch: None,
        warnings: vec![format!("healthproxy: not injected: {why}")],
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
    let count = |list: &str| {
        pod.get("spec")
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let containers = count("containers") + count("initContainers");
    if containers > MAX_CONTAINERS {
        return refused(format!(
            "the pod has {containers} containers, more than the {MAX_CONTAINERS} the webhook injects"
        ));
    }
    let workload = workload_of(pod, namespace);
    let mut changed = match serde_yaml_ng::to_value(pod) {
        Ok(v) => v,
        Err(e) => return refused(format!("the pod: {e}")),
    };
    // A pod alone: no Service to tell its serving ports (the probed ones
    // are used), no Namespace; its own mesh containers and annotations.
    let around = crate::inject::serving::Surroundings::default();
    let injection = match template::inject(&mut changed, &workload, options, &around, None) {
        Err(refusal) => return refused(refusal.to_string()),
        Ok(Injected::Unchanged { warnings }) => return unchanged(Outcome::NoProbes, warnings),
        Ok(Injected::Changed(injection)) => injection,
    };
    let mut changed = match serde_json::to_value(&changed) {
        Ok(v) => v,
        Err(e) => return refused(e.to_string()),
    };
    carry_in_annotations(&mut changed, &injection.config, injection.token.as_deref());
    let annotations: usize = changed["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if annotations > MAX_ANNOTATIONS {
        return refused(format!(
            "with the sidecar's config and record the pod's annotations would be {annotations} bytes, more than the API server's {MAX_ANNOTATIONS}"
        ));
    }
    let patch = diff(pod, &changed);
    let size = serde_json::to_vec(&patch).map_or(usize::MAX, |b| b.len());
    if size > MAX_PATCH {
        return refused(format!(
            "the patch would be {size} bytes, more than the {MAX_PATCH} the webhook answers"
        ));
    }
    let mut warnings = injection.warnings;
    if let Some(warning) = crate::inject::placeholder_image(&options.image) {
        // Said to whoever creates the pod, which would not start.
        warnings.push(format!("healthproxy: {warning}"));
    }
    Mutation {
        outcome: Outcome::Injected,
        patch: Some(patch),
        warnings,
    }
}

/// The JSONPatch from `old` to `new`. Lists whose items all have a
/// `name` (containers, volumes) are matched by name, so that the classic
/// sidecar put first is one `add` rather than a change of every container
/// after it; others by index. Linear in the sizes of both.
pub(crate) fn diff(old: &Value, new: &Value) -> json_patch::Patch {
    let mut ops = Vec::new();
    diff_at(old, new, &mut json_patch::jsonptr::PointerBuf::new(), &mut ops);
    json_patch::Patch(ops)
}

fn diff_at(
    old: &Value,
    new: &Value,
    at: &mut json_patch::jsonptr::PointerBuf,
    ops: &mut Vec<json_patch::PatchOperation>,
) {
    use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
    let add = |at: &json_patch::jsonptr::PointerBuf, value: &Value| {
        PatchOperation::Add(AddOperation {
            path: at.clone(),
            value: value.clone(),
        })
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                at.push_back(key);
                match a.get(key) {
                    Some(was) => diff_at(was, value, at, ops),
                    None => ops.push(add(at, value)),
                }
                at.pop_back();
            }
            for key in a.keys().filter(|k| !b.contains_key(*k)) {
                at.push_back(key);
                ops.push(PatchOperation::Remove(RemoveOperation { path: at.clone() }));
                at.pop_back();
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
            let named = a
                .iter()
                .chain(b)
                .all(|v| v.get("name").is_some_and(Value::is_string));
            if named {
                // Every old item, in order, among the new ones: the others
                // are added where they stand.
                let mut i = 0;
                let mut pending = Vec::new();
                for (j, item) in b.iter().enumerate() {
                    at.push_back(j);
                    if i < a.len() && name(&a[i]) == name(item) {
                        diff_at(&a[i], item, at, &mut pending);
                        i += 1;
                    } else {
                        pending.push(add(at, item));
                    }
                    at.pop_back();
                }
                if i == a.len() {
                    ops.extend(pending);
                    return;
                }
            } else if a.len() <= b.len() {
                for (j, item) in b.iter().enumerate() {
                    at.push_back(j);
                    match a.get(j) {
                        Some(was) => diff_at(was, item, at, ops),
                        None => ops.push(add(at, item)),
                    }
                    at.pop_back();
                }
                return;
            }
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: at.clone(),
                value: new.clone(),
            }));
        }
        _ if old == new => {}
        _ => ops.push(PatchOperation::Replace(ReplaceOperation {
            path: at.clone(),
            value: new.clone(),
        })),
    }
}

/// Moves the config and the token from the ConfigMap and Secret `inject`
/// refers to into `pod`'s annotations: its volumes of the same names
/// become `downwardAPI` volumes that project them to the same files.
pub(crate) fn carry_in_annotations(pod: &mut Value, config: &str, token: Option<&str>) {
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
pub(crate) fn workload_of(pod: &Value, namespace: Option<&str>) -> Workload {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc_4648s() {
        for (raw, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xfe]), "+//+");
    }

    #[test]
    fn an_exec_probe_is_converted_by_the_webhook_as_by_inject() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "cache"},
            "spec": {"containers": [{
                "name": "redis",
                "image": "redis:7",
                "env": [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "r", "key": "p"}}}],
                "livenessProbe": {"exec": {"command": ["sh", "-c", "redis-cli -a \"$REDIS_PASSWORD\" ping | grep -q PONG"]}},
                "readinessProbe": {"exec": {"command": ["sh", "-c", "redis-cli -a \"$REDIS_PASSWORD\" ping | grep -q PONG"]}}
            }]}
        });
        let m = mutate(&pod, Some("shop"), &Options::default());
        assert!(matches!(m.outcome, Outcome::Injected), "{:?}", m.warnings);
        let mut got = pod.clone();
        json_patch::patch(&mut got, &m.patch.unwrap()).unwrap();
        let sidecar = &got["spec"]["initContainers"][0];
        assert_eq!(
            sidecar["env"],
            json!([{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "r", "key": "p"}}}])
        );
        let live = &got["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(live["httpGet"]["path"], "/containers/redis/livez");
        let annotations = got["metadata"]["annotations"].to_string();
        assert!(
            annotations.contains(r#"redis = { password_env = \"REDIS_PASSWORD\", expect = \"pong\" }"#),
            "{annotations}"
        );
    }

    #[test]
    fn named_items_are_matched_by_name_and_the_patch_applies() {
        let old = json!({"spec": {"containers": [{"name": "a", "x": 1}, {"name": "b"}], "v": [1, 2]}});
        let new = json!({"spec": {"containers": [{"name": "side"}, {"name": "a", "x": 2}, {"name": "b"}], "v": [1], "w": "~/"}});
        let patch = diff(&old, &new);
        let text = serde_json::to_string(&patch).unwrap();
        assert!(
            text.contains(r#"{"op":"add","path":"/spec/containers/0","value":{"name":"side"}}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"op":"replace","path":"/spec/containers/1/x","value":2}"#),
            "{text}"
        );
        let mut got = old.clone();
        json_patch::patch(&mut got, &patch).unwrap();
        assert_eq!(got, new);
        // Reordered: the list is replaced whole, and still right.
        let swapped = json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "x": 1}], "v": [1, 2]}});
        let mut got = old.clone();
        json_patch::patch(&mut got, &diff(&old, &swapped)).unwrap();
        assert_eq!(got, swapped);
    }
}

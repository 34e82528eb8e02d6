//! `inject` and `uninject`: existing Kubernetes manifests in, the same
//! workloads with healthproxy out, and back.
//!
//! - [`stream`]: a YAML stream (several documents, `kind: List`), the
//!   workloads in it, and the ConfigMap and Secret generated beside each.
//! - [`template`]: one pod template, the transformation itself; reusable
//!   on a pod from an admission request.
//! - [`probe`]: one probe read with the kubelet's defaults, the check it
//!   becomes and the probe that replaces it (the timing rule is there).
//! - [`record`]: what `inject` changed, kept in an annotation so that
//!   `uninject` restores the original exactly.
//! - [`serving`]: `drain.mesh` and `drain.ports`, from the pod's mesh and
//!   the Services of the stream.
//! - [`yaml`]: splitting a stream and writing YAML that `kubectl` reads
//!   back with the same types.

pub(crate) mod exec;
pub(crate) mod probe;
pub(crate) mod record;
pub(crate) mod serving;
pub(crate) mod stream;
pub mod template;
pub(crate) mod yaml;

use std::fmt;
use std::time::Duration;

pub use serving::MeshChoice;
pub use stream::{Output, inject, uninject};

/// The image of the sidecar unless `--image` says otherwise: the one
/// deploy/ uses (built from this repository's Dockerfile). Its registry is
/// a placeholder (`.example` is reserved): no cluster can pull it, so
/// `inject` and the webhook warn while it is used ([`placeholder_image`]).
pub const DEFAULT_IMAGE: &str = concat!("registry.example/healthproxy:", env!("CARGO_PKG_VERSION"));

/// The registry of [`DEFAULT_IMAGE`], which no cluster can pull from.
pub(crate) const PLACEHOLDER_REGISTRY: &str = "registry.example";

/// What to tell the user when `image` is on the placeholder registry: the
/// first `kubectl apply` would end in ImagePullBackOff.
pub(crate) fn placeholder_image(image: &str) -> Option<String> {
    let (registry, _) = image.split_once('/')?;
    (registry == PLACEHOLDER_REGISTRY).then(|| {
        format!(
            "the sidecar's image {image} is a placeholder that no cluster can pull: the pods would end in ImagePullBackOff. \
             Build and push the image first (README, \"Build and push the image\"), then pass --image REGISTRY/healthproxy:{}",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// How the generated ConfigMap is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConfigMapName {
    /// `WORKLOAD-healthproxy-HASH`, the hash of its content, as kustomize's
    /// `configMapGenerator` names one: a config change is a new ConfigMap
    /// that only the new pods mount, so the rollout carries it, a bad
    /// config stops at the first new pods, and a rollback brings the old
    /// config back with the old template.
    #[default]
    Hashed,
    /// `WORKLOAD-healthproxy`, edited in place: every running pod reloads
    /// the change within seconds (the reload rule keeps their probes), and
    /// no old ConfigMap is left behind.
    Fixed,
}

/// `drain.max` unless `--drain-max` says otherwise: deploy/'s, which the
/// default grace period of 30 s covers with 10 s to spare for the app.
pub(crate) const DEFAULT_DRAIN_MAX: Duration = Duration::from_secs(20);

/// Where the sidecar goes in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sidecar {
    /// An `initContainers` entry with `restartPolicy: Always` (Kubernetes
    /// 1.29+): started before the app, stopped after it.
    Native,
    /// The first entry of `containers`, for clusters before 1.29.
    Classic,
}

impl Sidecar {
    /// The name used on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Sidecar::Native => "native",
            Sidecar::Classic => "classic",
        }
    }
}

/// How to inject.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sidecar's image.
    pub image: String,
    /// Native or classic sidecar.
    pub sidecar: Sidecar,
    /// The sidecar's port.
    pub port: u16,
    /// `drain.max`.
    pub drain_max: Duration,
    /// Only these app containers (all when `None`).
    pub containers: Option<Vec<String>>,
    /// How the generated ConfigMap is named.
    pub config_map: ConfigMapName,
    /// `drain.mesh`: found in the pod, or as given.
    pub mesh: MeshChoice,
    /// Set `shareProcessNamespace: true` on a pod whose `pgrep -f` exec
    /// probe then becomes a `process` check (every container then sees,
    /// and as the same user may signal, the others' processes).
    pub share_process_namespace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: DEFAULT_IMAGE.into(),
            sidecar: Sidecar::Native,
            port: crate::config::DEFAULT_PORT,
            drain_max: DEFAULT_DRAIN_MAX,
            containers: None,
            config_map: ConfigMapName::default(),
            mesh: MeshChoice::Auto,
            share_process_namespace: false,
        }
    }
}

/// The object holding a pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `Pod`, `Deployment`, ...
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if given.
    pub namespace: Option<String>,
}

/// The kinds whose pod template `inject` handles, with its path.
pub(crate) const WORKLOADS: &[(&str, &[&str])] = &[
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("ReplicationController", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
    // Argo Rollouts (`argoproj.io/v1alpha1`): a Deployment's template.
    ("Rollout", &["spec", "template"]),
];

/// Where other kinds commonly keep a pod template: such an object is
/// passed through with a note naming its kind.
pub(crate) const TEMPLATE_PATHS: &[&[&str]] = &[
    &["spec", "template"],
    &["template"],
    &["spec", "jobTemplate", "spec", "template"],
];

impl Workload {
    /// The path of the pod template in the object, as a field prefix
    /// (`spec.template.`, or nothing for a Pod).
    pub(crate) fn template_path(&self) -> String {
        WORKLOADS
            .iter()
            .find(|(k, _)| *k == self.kind)
            .map(|(_, path)| path.iter().map(|p| format!("{p}.")).collect())
            .unwrap_or_default()
    }

    /// The generated ConfigMap's name, without its hash.
    pub(crate) fn config_map(&self) -> String {
        format!("{}-healthproxy", self.name)
    }

    /// The name of the ConfigMap that holds `config`: with
    /// [`ConfigMapName::Hashed`], [`Workload::config_map`] and the first
    /// ten hex digits of the config's SHA-256.
    pub(crate) fn config_map_of(&self, config: &str, naming: ConfigMapName) -> String {
        match naming {
            ConfigMapName::Fixed => self.config_map(),
            ConfigMapName::Hashed => {
                let digest = ring::digest::digest(&ring::digest::SHA256, config.as_bytes());
                let hex: String = digest.as_ref()[..5].iter().map(|b| format!("{b:02x}")).collect();
                format!("{}-{hex}", self.config_map())
            }
        }
    }

    /// The generated Secret's name.
    pub(crate) fn secret(&self) -> String {
        format!("{}-healthproxy-token", self.name)
    }

    /// A Job or a CronJob: its pods are meant to complete.
    pub(crate) fn is_job(&self) -> bool {
        matches!(self.kind.as_str(), "Job" | "CronJob")
    }

    /// `Kind/name` or `Kind/namespace/name`: the generated objects'
    /// `healthproxy.io/generated-for`.
    pub(crate) fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What is wrong with one field of what is being read, named under it
/// (`httpGet.port` in a probe; empty for the whole). Its text is the
/// field and the message, which reads as what the field does wrong:
/// `periodSeconds must be a number, not text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The field, such as `httpGet.port`.
    pub(crate) field: String,
    /// What is wrong with it.
    pub(crate) message: String,
}

impl FieldError {
    /// `message` about `field`.
    pub(crate) fn new(field: String, message: String) -> FieldError {
        FieldError { field, message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// What `inject` will not do, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {message}")]
pub struct Refusal {
    /// The object, such as `Deployment web` or `document at line 12`.
    pub object: String,
    /// The field, such as `spec.template.spec.containers[app].livenessProbe`.
    pub field: String,
    /// Why.
    pub message: String,
}

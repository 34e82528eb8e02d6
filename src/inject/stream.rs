//! A YAML stream: its documents (and the items of a `kind: List`), the
//! workloads among them, and the ConfigMap and Secret written in front of
//! each injected workload. Documents that are not changed are written
//! back as they were, byte for byte.

use std::collections::HashSet;

use serde_yaml_ng::{Mapping, Value};

use super::serving::Surroundings;
use super::template::{self, Injected, Injection};
use super::{Options, Refusal, WORKLOADS, Workload, yaml};

/// The label on the objects `inject` generates.
pub(crate) const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "healthproxy-inject");
/// The longest name of a ConfigMap or Secret (a DNS subdomain).
const MAX_NAME: usize = 253;
/// The annotation naming the workload a generated object belongs to.
pub(crate) const GENERATED_FOR: &str = "healthproxy.io/generated-for";

/// The transformed stream and what to tell the user.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The YAML stream to apply.
    pub text: String,
    /// Things kept as they were, raised values, lints of the moved probes.
    pub warnings: Vec<String>,
    /// What moved where, one line each.
    pub(crate) summary: Vec<String>,
    /// Every field restored from an injection record, as `OBJECT: FIELD`
    /// (written on stderr: the record is text few people read).
    pub(crate) restored: Vec<String>,
    /// What was chosen for the user (the drain's mesh and ports), one
    /// line each: always worth saying.
    pub notes: Vec<String>,
}

/// Injects every workload of `stream`.
pub fn inject(stream: &str, options: &Options) -> Result<Output, Refusal> {
    transform(stream, Some(options))
}

/// Restores every injected workload of `stream` and drops the objects
/// `inject` generated for them.
pub fn uninject(stream: &str) -> Result<Output, Refusal> {
    transform(stream, None)
}

fn transform(stream: &str, options: Option<&Options>) -> Result<Output, Refusal> {
    let docs = documents(stream)?;
    let mut owners = HashSet::new();
    let mut around = Surroundings::default();
    for (_, value) in &docs {
        collect_workloads(value, &mut owners, &mut around);
    }
    let mut job = Job {
        options,
        owners,
        around,
        generated: HashSet::new(),
        containers: HashSet::new(),
        out: Output::default(),
    };
    let mut pieces = Vec::new();
    for (doc, value) in docs {
        match job.object(value, doc.line)? {
            None => pieces.push(doc.text),
            Some(values) => {
                let comments = doc
                    .text
                    .lines()
                    .filter(|l| l.trim_start().starts_with('#'))
                    .count();
                if comments > 0 && !values.is_empty() {
                    job.out.warnings.push(format!(
                        "the document at line {}: written anew, without its {comments} comment line(s)",
                        doc.line
                    ));
                }
                pieces.extend(values.iter().map(yaml::emit));
            }
        }
    }
    if let Some(only) = options.and_then(|o| o.containers.as_ref()) {
        for name in only.iter().filter(|n| !job.containers.contains(*n)) {
            job.out.warnings.push(format!(
                "--containers {name}: no workload here has a probe to take over in a container of that name"
            ));
        }
    }
    for piece in pieces {
        if !job.out.text.is_empty() {
            job.out.text.push_str("---\n");
        }
        job.out.text.push_str(&piece);
        if !piece.ends_with('\n') {
            job.out.text.push('\n');
        }
    }
    Ok(job.out)
}

/// The documents of `stream` that hold something, each read as YAML
/// (merge keys applied).
fn documents(stream: &str) -> Result<Vec<(yaml::Document, Value)>, Refusal> {
    let mut docs = Vec::new();
    for doc in yaml::split(stream) {
        if doc.text.trim().is_empty() {
            continue;
        }
        if let Some((line, column)) = yaml::too_deep(&doc.text, yaml::MAX_DEPTH) {
            // Refused before the YAML reader, whose time grows with the
            // square of the depth.
            return Err(Refusal {
                object: format!("the document at line {}", doc.line),
                field: "(YAML)".into(),
                message: format!(
                    "nested deeper than {} levels at line {} column {column}",
                    yaml::MAX_DEPTH,
                    doc.line + line - 1
                ),
            });
        }
        let mut value: Value = serde_yaml_ng::from_str(&doc.text).map_err(|e| Refusal {
            object: format!("the document at line {}", doc.line),
            field: "(YAML)".into(),
            message: e.to_string(),
        })?;
        // `<<: *anchor` merge keys, as the Kubernetes tools read them.
        value.apply_merge().map_err(|e| Refusal {
            object: format!("the document at line {}", doc.line),
            field: "(YAML)".into(),
            message: e.to_string(),
        })?;
        docs.push((doc, value));
    }
    Ok(docs)
}

/// The workload an object is, if it holds a pod template.
fn workload(value: &Value) -> Option<Workload> {
    let kind = value.get("kind")?.as_str()?;
    WORKLOADS.iter().find(|(k, _)| *k == kind)?;
    // `Rollout` is Argo's; another group's kind of that name is unknown.
    if kind == "Rollout"
        && !value
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("argoproj.io/"))
    {
        return None;
    }
    let metadata = value.get("metadata");
    Some(Workload {
        kind: kind.to_string(),
        name: metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        namespace: metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The note for an object of a kind `inject` does not handle that holds
/// a pod template with containers: passed through, its kind named.
fn unknown_template(value: &Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let path = super::TEMPLATE_PATHS.iter().find(|path| {
        path.iter()
            .try_fold(value, |v, key| v.get(*key))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .is_some_and(Value::is_sequence)
    })?;
    let api = value.get("apiVersion").and_then(Value::as_str).unwrap_or("?");
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let known: Vec<&str> = super::WORKLOADS.iter().map(|(k, _)| *k).collect();
    Some(format!(
        "{kind} {name} ({api}): holds a pod template at {}, but inject handles only {}: passed through unchanged (the admission webhook injects the pods it creates)",
        path.join("."),
        known.join(", ")
    ))
}

fn collect_workloads(value: &Value, into: &mut HashSet<String>, around: &mut Surroundings) {
    if let Some(w) = workload(value) {
        into.insert(w.key());
    }
    around.add(value);
    if is_list(value)
        && let Some(items) = value.get("items").and_then(Value::as_sequence)
    {
        items.iter().for_each(|i| collect_workloads(i, into, around));
    }
}

fn is_list(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("List")
}

/// An object `inject` generated for one of `owners`.
fn generated_for(value: &Value, owners: &HashSet<String>) -> bool {
    let metadata = value.get("metadata");
    let managed = metadata
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(MANAGED_BY.0))
        .and_then(Value::as_str)
        == Some(MANAGED_BY.1);
    let owner = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(GENERATED_FOR))
        .and_then(Value::as_str);
    managed && owner.is_some_and(|o| owners.contains(o))
}

struct Job<'a> {
    options: Option<&'a Options>,
    owners: HashSet<String>,
    /// The Services and Namespaces of the stream.
    around: Surroundings,
    /// The generated objects' names, by namespace: two workloads of the
    /// same name (a Deployment and a CronJob) would share them.
    generated: HashSet<(Option<String>, String)>,
    /// The app containers injected, for `--containers`.
    containers: HashSet<String>,
    out: Output,
}

impl Job<'_> {
    /// The objects that replace `value`, or `None` to keep it as written.
    fn object(&mut self, mut value: Value, line: usize) -> Result<Option<Vec<Value>>, Refusal> {
        if generated_for(&value, &self.owners) {
            // Written again beside its workload (inject), or gone with
            // the injection (uninject).
            return Ok(Some(Vec::new()));
        }
        if is_list(&value) {
            return self.list(value, line);
        }
        let Some(mut w) = workload(&value) else {
            if self.options.is_some()
                && let Some(note) = unknown_template(&value)
            {
                self.out.warnings.push(note);
            }
            return Ok(None);
        };
        let path = WORKLOADS
            .iter()
            .find(|(k, _)| *k == w.kind)
            .map(|(_, p)| *p)
            .unwrap_or(&[]);
        if w.namespace.as_deref() == Some("") {
            w.namespace = None;
        }
        if w.kind == "Rollout" && value.get("spec").and_then(|s| s.get("workloadRef")).is_some() {
            if self.options.is_some() {
                self.out.warnings.push(format!(
                    "{w}: its pods come from spec.workloadRef, not a template of its own: passed through unchanged; inject the workload it names"
                ));
            }
            return Ok(None);
        }
        let Some(template) = pod_template(&mut value, path) else {
            if self.options.is_none() {
                return Ok(None);
            }
            return Err(Refusal {
                object: w.to_string(),
                field: path.join("."),
                message: "missing: there is no pod template".into(),
            });
        };
        let undone = template::uninject(template, &w)?;
        let undone = undone.map(|u| {
            self.out.warnings.extend(u.warnings);
            self.out
                .restored
                .extend(u.restored.iter().map(|f| format!("{w}: {f}")));
            u.token
        });
        let Some(options) = self.options else {
            if undone.is_some() {
                self.out.summary.push(format!("{w}: restored"));
                return Ok(Some(vec![value]));
            }
            return Ok(None);
        };
        match template::inject(template, &w, options, &self.around, undone.clone().flatten())? {
            Injected::Unchanged { warnings } => {
                self.out.warnings.extend(warnings);
                Ok(undone.map(|_| vec![value]))
            }
            Injected::Changed(_) if w.name.is_empty() => Err(Refusal {
                object: format!("the {} at line {line}", w.kind),
                field: "metadata.name".into(),
                message: "missing: the generated ConfigMap and Secret are named after it".into(),
            }),
            Injected::Changed(injection) => self.injected(&w, options, injection, value).map(Some),
        }
    }

    /// A `kind: List`: its items, each transformed; `None` when none
    /// changed.
    fn list(&mut self, mut value: Value, line: usize) -> Result<Option<Vec<Value>>, Refusal> {
        let Some(Value::Sequence(items)) = value.get_mut("items") else {
            return Ok(None);
        };
        let mut changed = false;
        let mut new = Vec::new();
        for item in std::mem::take(items) {
            match self.object(item.clone(), line)? {
                None => new.push(item),
                Some(values) => {
                    changed = true;
                    new.extend(values);
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        if let Some(Value::Sequence(items)) = value.get_mut("items") {
            *items = new;
        }
        Ok(Some(vec![value]))
    }

    /// The injected workload `w` (its object `value`) with the ConfigMap
    /// and Secret written in front of it; the summary says what moved.
    fn injected(
        &mut self,
        w: &Workload,
        options: &Options,
        injection: Injection,
        value: Value,
    ) -> Result<Vec<Value>, Refusal> {
        self.out.warnings.extend(injection.warnings);
        self.out.notes.extend(injection.notes);
        for m in &injection.moved {
            self.out.summary.push(format!(
                "{w}: container {}: {} {} -> check {:?} in ConfigMap {}; the probe now asks :{}{}",
                m.container,
                super::probe::field(m.kind),
                m.handler.describe(),
                m.check_name(),
                injection.config_map,
                options.port,
                m.endpoint()
            ));
        }
        self.out.summary.push(format!(
            "{w}: {} sidecar {:?} ({}){}",
            options.sidecar.as_str(),
            template::SIDECAR,
            options.image,
            if injection.token.is_some() {
                format!(", preStop /prestop with the token in Secret {}", w.secret())
            } else {
                String::new()
            }
        ));
        if injection.config_map.len() > MAX_NAME {
            return Err(Refusal {
                object: w.to_string(),
                field: "metadata.name".into(),
                message: format!(
                    "the ConfigMap's name {} would be longer than {MAX_NAME} characters",
                    injection.config_map
                ),
            });
        }
        if !self.generated.insert((w.namespace.clone(), w.config_map())) {
            return Err(Refusal {
                object: w.to_string(),
                field: "metadata.name".into(),
                message: format!(
                    "another workload of this name in this namespace would share the ConfigMap {}",
                    w.config_map()
                ),
            });
        }
        self.containers
            .extend(injection.moved.iter().map(|m| m.container.clone()));
        let mut objects = vec![config_map(w, &injection.config_map, &injection.config)];
        if let Some(token) = &injection.token {
            objects.push(secret(w, token));
        }
        objects.push(value);
        Ok(objects)
    }
}
fn pod_template<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let template = super::record::lookup(value, path)?;
    template.is_mapping().then_some(template)
}

fn metadata(w: &Workload, name: String) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), name.into());
    if let Some(ns) = &w.namespace {
        m.insert("namespace".into(), ns.clone().into());
    }
    let mut labels = Mapping::new();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    m.insert("labels".into(), Value::Mapping(labels));
    let mut annotations = Mapping::new();
    annotations.insert(GENERATED_FOR.into(), w.key().into());
    m.insert("annotations".into(), Value::Mapping(annotations));
    Value::Mapping(m)
}

fn config_map(w: &Workload, name: &str, config: &str) -> Value {
    let mut data = Mapping::new();
    data.insert("config.toml".into(), config.into());
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "ConfigMap".into());
    m.insert("metadata".into(), metadata(w, name.to_string()));
    m.insert("data".into(), Value::Mapping(data));
    Value::Mapping(m)
}

fn secret(w: &Workload, token: &str) -> Value {
    let mut data = Mapping::new();
    data.insert("token".into(), token.into());
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Secret".into());
    m.insert("metadata".into(), metadata(w, w.secret()));
    m.insert("type".into(), "Opaque".into());
    m.insert("stringData".into(), Value::Mapping(data));
    Value::Mapping(m)
}

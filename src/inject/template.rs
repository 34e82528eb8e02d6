//! The transformation of one pod template (`metadata` and `spec`, as in a
//! Pod or a workload's `spec.template`): probes moved into the sidecar's
//! config, the sidecar, its volumes, preStop hooks and grace period
//! added, and every change recorded so that [`uninject`] can undo it.
//!
//! It works on a YAML value, so that fields this version does not know
//! pass through untouched; an admission webhook can call it with a pod
//! read from JSON.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::probe::{self, Handler, Moved, Plan};
use super::record::{self, Recorder, lookup};
use super::serving::{self, Surroundings};
use super::{FieldError, Options, Refusal, Sidecar, Workload};
use crate::config::{Config, Mesh, ProbeKind, original_probe_lints};

/// The sidecar container's name.
pub(crate) const SIDECAR: &str = "healthproxy";
/// The volume holding the config.
pub(crate) const CONFIG_VOLUME: &str = "healthproxy-config";
/// The volume holding the token.
pub(crate) const TOKEN_VOLUME: &str = "healthproxy-token";
/// Where the sidecar reads its config.
pub(crate) const CONFIG_DIR: &str = "/etc/healthproxy";
/// Where the sidecar reads the token (deploy/'s `drain.token_file`).
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/healthproxy";
/// The annotation whose change rolls the pods when the config changes.
pub(crate) const HASH_ANNOTATION: &str = "healthproxy.io/config-hash";
/// Time left to the app after the drain: the grace period is raised to
/// `drain.max` plus this when it is shorter.
pub(crate) const APP_SHUTDOWN: Duration = Duration::from_secs(10);
/// The kubelet's default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: u64 = 30;

/// What injecting one pod template produced.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The sidecar's config file.
    pub config: String,
    /// The name of the ConfigMap the pod mounts it from.
    pub(crate) config_map: String,
    /// The token the preStop hooks send, when any container got one.
    pub token: Option<String>,
    /// The probes the sidecar took over.
    pub(crate) moved: Vec<Moved>,
    /// What the user should know (kept exec probes, kept preStop hooks).
    pub(crate) warnings: Vec<String>,
    /// What was chosen for the user (the drain's mesh and ports).
    pub(crate) notes: Vec<String>,
}

/// What [`inject`] did.
#[derive(Debug, Clone)]
pub enum Injected {
    /// The template was changed.
    Changed(Injection),
    /// Nothing to take over: the template is unchanged.
    Unchanged {
        /// Why, and what else the user should know.
        warnings: Vec<String>,
    },
}

/// Injects the sidecar into `template`, with the Services and Namespaces
/// `around` it in the stream. `token` is reused when given (a template
/// injected before keeps its token). An injected template must be
/// [`uninject`]ed first.
///
/// Three steps: [`survey`] reads the pod (its containers, ports and
/// probes, and whether healthproxy is there already), [`decide`] says
/// which probes move and which stay and why, and [`apply`] writes the
/// sidecar, its volumes, the rewritten probes and the annotations. The
/// template is changed only once every check is known to be valid.
pub fn inject(
    template: &mut Value,
    workload: &Workload,
    options: &Options,
    around: &Surroundings,
    token: Option<String>,
) -> Result<Injected, Refusal> {
    let refuse = Refuse(workload);
    let pod = survey(template, options, &refuse)?;
    let Decisions {
        taken,
        env,
        probed,
        mut warnings,
    } = decide(workload, pod.probes, pod.stopped, options.port, &refuse)?;
    if taken.is_empty() {
        warnings.push(format!(
            "{workload}: no httpGet, tcpSocket, grpc or recognised exec probe to take over: left unchanged"
        ));
        return Ok(Injected::Unchanged { warnings });
    }
    if pod.host_network {
        warnings.push(format!(
            "{workload}: hostNetwork: the sidecar's port {} is the node's; two such pods on one node need different --port",
            options.port
        ));
    }
    let drain = drain(template, workload, options, around, &probed, &refuse)?;
    let hooked = prestop_hooked(&pod.containers, &pod.selected, workload, options, &mut warnings);
    let token = (!hooked.is_empty()).then(|| token.unwrap_or_else(new_token));
    if drain.exit_with_app && drain.ports.is_empty() {
        return Err(refuse.at(
            "spec.containers",
            "a Job's classic sidecar exits when the app stops listening, and no port of the app is known: declare its ports, or use --sidecar native",
        ));
    }
    let config = config_text(workload, options, &drain, token.is_some(), &taken);
    warnings.extend(validate(&config, &env, workload, &refuse)?);
    let changes = Changes {
        containers: &pod.containers,
        taken: &taken,
        hooked: &hooked,
        token: token.as_deref(),
        env: &env,
        config: &config,
        config_map: workload.config_map_of(&config, options.config_map),
        shares_processes: pod.shares_processes,
    };
    let (config_map, more) = apply(template, workload, options, changes, &refuse)?;
    warnings.extend(more);
    Ok(Injected::Changed(Injection {
        config,
        config_map,
        token,
        moved: taken.into_iter().map(|t| t.moved).collect(),
        warnings,
        notes: drain.notes,
    }))
}

/// Makes the refusals of one template: they name its workload and a
/// field under the template.
struct Refuse<'a>(&'a Workload);

impl Refuse<'_> {
    fn at(&self, field: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            object: self.0.to_string(),
            field: format!("{}{field}", self.0.template_path()),
            message: message.into(),
        }
    }
}

/// The pod as [`survey`] read it, before anything is decided.
struct Survey {
    /// `spec.containers`, as they were.
    containers: Vec<Value>,
    /// The indexes of the containers `--containers` selects (all by
    /// default).
    selected: Vec<usize>,
    /// The probes of the selected containers, in order, each planned.
    probes: Vec<Read>,
    /// What stopped the reading of the probes: raised by [`decide`] after
    /// what it refuses in the probes read before it, as one pass over the
    /// containers would.
    stopped: Option<Refusal>,
    /// `spec.shareProcessNamespace: true`, before inject.
    shares_processes: bool,
    /// `spec.hostNetwork: true`.
    host_network: bool,
}

/// One probe of an app container, read.
struct Read {
    /// The container's index in `spec.containers`.
    index: usize,
    /// The container's name.
    container: String,
    /// Which probe.
    kind: ProbeKind,
    /// The probe as written.
    original: Mapping,
    /// What [`probe::plan`] made of it.
    plan: Plan,
}

/// Reads the pod: refuses one inject cannot take (injected already, no
/// containers, healthproxy set up by hand, the sidecar's port taken) and
/// plans each probe of the selected containers.
fn survey(template: &Value, options: &Options, refuse: &Refuse<'_>) -> Result<Survey, Refusal> {
    if record::read(template).is_some() {
        return Err(refuse.at(
            &format!("metadata.annotations.{}", record::ANNOTATION),
            "already injected: uninject it first",
        ));
    }
    let Some(spec) = template.get("spec").and_then(Value::as_mapping) else {
        return Err(refuse.at("spec", "missing: there is no pod spec to inject into"));
    };
    let containers = match spec.get("containers") {
        Some(Value::Sequence(list)) if !list.is_empty() => list.clone(),
        _ => return Err(refuse.at("spec.containers", "missing: a pod needs containers")),
    };
    check_names(spec, options.port, refuse)?;
    let flag = |key: &str| spec.get(key).and_then(Value::as_bool) == Some(true);
    let mut survey = Survey {
        containers,
        selected: Vec::new(),
        probes: Vec::new(),
        stopped: None,
        shares_processes: flag("shareProcessNamespace"),
        host_network: flag("hostNetwork"),
    };
    if let Err(refusal) = read_probes(&mut survey, options, refuse) {
        survey.stopped = Some(refusal);
    }
    Ok(survey)
}

/// Names are unique among a pod's containers, and among its volumes (the
/// API rejects a pod otherwise): the record finds items by name. None is
/// the sidecar's, and no container listens on the sidecar's `port`:
/// every container shares the pod's network.
fn check_names(spec: &Mapping, port: u16, refuse: &Refuse<'_>) -> Result<(), Refusal> {
    let mut container_names = HashSet::new();
    let mut volume_names = HashSet::new();
    for list in ["containers", "initContainers", "volumes"] {
        let taken = [SIDECAR, CONFIG_VOLUME, TOKEN_VOLUME];
        for item in spec.get(list).and_then(Value::as_sequence).into_iter().flatten() {
            let name = item.get("name").and_then(Value::as_str).unwrap_or("");
            let names = if list == "volumes" {
                &mut volume_names
            } else {
                &mut container_names
            };
            if !name.is_empty() && !names.insert(name) {
                return Err(refuse.at(
                    &format!("spec.{list}[{name}]"),
                    "this name is given twice: names are unique in a pod (the API rejects it)",
                ));
            }
            if taken.contains(&name) {
                return Err(refuse.at(
                    &format!("spec.{list}[{name}]"),
                    "this name is the sidecar's: the pod already has healthproxy set up by hand",
                ));
            }
            let ports = item.get("ports").and_then(Value::as_sequence);
            for (j, p) in ports.into_iter().flatten().enumerate() {
                if p.get("containerPort").and_then(Value::as_u64) == Some(u64::from(port)) {
                    return Err(refuse.at(
                        &format!("spec.{list}[{name}].ports[{j}].containerPort"),
                        format!("{port} is the sidecar's port: choose another with --port"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Reads and plans every probe of the containers `--containers` selects,
/// into `survey.probes`; stops at the first that cannot be read.
fn read_probes(survey: &mut Survey, options: &Options, refuse: &Refuse<'_>) -> Result<(), Refusal> {
    let shares_processes = survey.shares_processes || options.share_process_namespace;
    for (i, c) in survey.containers.iter().enumerate() {
        let Some(c) = c.as_mapping() else {
            return Err(refuse.at(&format!("spec.containers[{i}]"), "must be a mapping"));
        };
        let Some(name) = c.get("name").and_then(Value::as_str) else {
            return Err(refuse.at(&format!("spec.containers[{i}].name"), "missing"));
        };
        if options
            .containers
            .as_ref()
            .is_some_and(|only| !only.iter().any(|o| o == name))
        {
            continue;
        }
        survey.selected.push(i);
        let at = |f: &str| format!("spec.containers[{name}].{f}");
        for kind in ProbeKind::ALL {
            let field = probe::field(kind);
            let original = match c.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::Mapping(m)) => m,
                Some(_) => return Err(refuse.at(&at(field), "must be a mapping")),
            };
            let plan = probe::plan(name, c, kind, original, shares_processes).map_err(|e| {
                let f = if e.field.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{}", e.field)
                };
                refuse.at(&at(&f), e.message)
            })?;
            survey.probes.push(Read {
                index: i,
                container: name.to_string(),
                kind,
                original: original.clone(),
                plan,
            });
        }
    }
    Ok(())
}

/// What [`decide`] made of the probes.
#[derive(Debug)]
struct Decisions {
    /// The probes the sidecar takes over, in order.
    taken: Vec<Taken>,
    /// The variables the converted exec probes read, copied into the
    /// sidecar by reference.
    env: Vec<(String, Value)>,
    /// The pod's own ports the taken checks dial, sorted, each once.
    probed: Vec<u16>,
    /// The probes kept with the kubelet, and why.
    warnings: Vec<String>,
}

/// A probe the sidecar takes over.
#[derive(Debug)]
struct Taken {
    /// The check it becomes.
    moved: Moved,
    /// The probe as written.
    original: Mapping,
    /// Its container's index in `spec.containers`.
    index: usize,
}

/// Decides, probe by probe, which move to the sidecar (on `port`) and
/// which stay with the kubelet, and why. Nothing here reads the pod: it
/// works on the plans [`survey`] made, then raises what stopped it.
fn decide(
    workload: &Workload,
    probes: Vec<Read>,
    stopped: Option<Refusal>,
    port: u16,
    refuse: &Refuse<'_>,
) -> Result<Decisions, Refusal> {
    let mut out = Decisions {
        taken: Vec::new(),
        env: Vec::new(),
        probed: Vec::new(),
        warnings: Vec::new(),
    };
    for read in probes {
        let field = probe::field(read.kind);
        let keep = |why: &str| {
            format!(
                "{workload}: container {}: {field} is an exec probe kept with the kubelet: {why}",
                read.container
            )
        };
        let m = match read.plan {
            Plan::Keep(why) => {
                out.warnings.push(keep(&why));
                continue;
            }
            Plan::Move(m) => m,
        };
        if let Handler::Native(n) = &m.handler {
            let clash = n
                .env
                .iter()
                .find(|(var, item)| out.env.iter().any(|(v, other)| v == var && other != item));
            if let Some((var, _)) = clash {
                out.warnings.push(keep(&format!(
                    "it reads ${var}, which another container defines otherwise"
                )));
                continue;
            }
            for (var, item) in &n.env {
                if !out.env.iter().any(|(v, _)| v == var) {
                    out.env.push((var.clone(), item.clone()));
                }
            }
        }
        if m.handler.on_pod()
            && let Some(probed) = m.handler.port()
        {
            if probed == port {
                return Err(refuse.at(
                    &format!("spec.containers[{}].{field}", read.container),
                    format!(
                        "probes port {port}, the sidecar's: the pod already asks a healthproxy (choose another --port if not)"
                    ),
                ));
            }
            out.probed.push(probed);
        }
        out.taken.push(Taken {
            moved: m,
            original: read.original,
            index: read.index,
        });
    }
    if let Some(refusal) = stopped {
        return Err(refusal);
    }
    out.probed.sort_unstable();
    out.probed.dedup();
    Ok(out)
}

/// How the sidecar drains the pod: `drain.ports`, `drain.mesh`, and
/// whether it exits with the app, with notes saying why.
struct Drain {
    /// `drain.ports`.
    ports: Vec<u16>,
    /// `drain.mesh`.
    mesh: Mesh,
    /// `exit_when_app_exits`: a Job's classic sidecar.
    exit_with_app: bool,
    /// Why these ports and this mesh.
    notes: Vec<String>,
}

/// Chooses the drain's ports and mesh from the pod, the Services and
/// Namespaces `around` it and the ports its checks dial (`probed`).
fn drain(
    template: &Value,
    workload: &Workload,
    options: &Options,
    around: &Surroundings,
    probed: &[u16],
    refuse: &Refuse<'_>,
) -> Result<Drain, Refusal> {
    let namespace = workload.namespace.as_deref();
    let (mesh, mesh_why) = serving::mesh(template, namespace, around, options.mesh)
        .map_err(|e| refuse.at("metadata", e.to_string()))?;
    let (mut ports, mut ports_why) = serving::ports(template, namespace, around, probed);
    let exit_with_app = workload.is_job() && options.sidecar == Sidecar::Classic;
    if exit_with_app && ports.is_empty() {
        // A Job's classic sidecar follows the app by its listeners: any
        // port it declares tells when it has stopped.
        ports = serving::declared(template);
        ports_why = "the declared ports: a Job's classic sidecar exits once the app stops listening".into();
    }
    let left_out: Vec<String> = serving::declared(template)
        .into_iter()
        .filter(|p| !ports.contains(p))
        .map(|p| p.to_string())
        .collect();
    let notes = vec![
        format!(
            "{workload}: drain.ports = {ports:?}: {ports_why}{}",
            if left_out.is_empty() {
                String::new()
            } else {
                format!(
                    "; declared {} left out (no balancer sends there)",
                    left_out.join(", ")
                )
            }
        ),
        format!("{workload}: drain.mesh = {mesh_why}"),
    ];
    Ok(Drain {
        ports,
        mesh,
        exit_with_app,
        notes,
    })
}

/// The selected containers that get the preStop hook: those without one
/// of their own (a warning says each kept hook).
fn prestop_hooked(
    containers: &[Value],
    selected: &[usize],
    workload: &Workload,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Vec<usize> {
    let mut hooked = Vec::new();
    for &i in selected {
        let has = containers[i]
            .get("lifecycle")
            .and_then(|l| l.get("preStop"))
            .is_some_and(|p| !p.is_null());
        if !has {
            hooked.push(i);
            continue;
        }
        warnings.push(format!(
            "{workload}: container {}: has a preStop hook of its own: kept, so the kubelet does not wait for the drain before stopping it{}",
            name_of(&containers[i]),
            match options.sidecar {
                Sidecar::Classic => " (the sidecar drains on its own SIGTERM)",
                Sidecar::Native => " (add a GET of /prestop to the hook to drain first)",
            }
        ));
    }
    hooked
}

/// A container's name (checked by [`survey`]).
fn name_of(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// Reads the generated `config` as the sidecar will (the checks' `*_env`
/// variables are the sidecar's, set by the kubelet: any value stands for
/// theirs here); returns the lints of the original probes as warnings.
fn validate(
    config: &str,
    env: &[(String, Value)],
    workload: &Workload,
    refuse: &Refuse<'_>,
) -> Result<Vec<String>, Refusal> {
    let sidecar_var = |var: &str| {
        env.iter()
            .any(|(v, _)| v == var)
            .then(|| "set-by-the-kubelet".to_string())
    };
    match Config::from_toml_str(config, "generated config", &sidecar_var) {
        Err(errors) => {
            let e = &errors.errors[0];
            Err(refuse.at(
                "spec.containers",
                format!(
                    "the probes do not make a valid healthproxy config ({}: {})",
                    e.key, e.message
                ),
            ))
        }
        // The checks' lints come from the original probes; the lifecycle
        // guard is inject's own doing (a token whenever a preStop hook is
        // written).
        Ok(parsed) => Ok(original_probe_lints(&parsed)
            .into_iter()
            .map(|lint| {
                format!(
                    "{workload}: {}: {} (as in the original probe)",
                    lint.subject, lint.message
                )
            })
            .collect()),
    }
}

/// Everything [`apply`] writes, decided.
struct Changes<'a> {
    /// `spec.containers` as [`survey`] read them.
    containers: &'a [Value],
    /// The probes the sidecar takes over.
    taken: &'a [Taken],
    /// The containers that get the preStop hook.
    hooked: &'a [usize],
    /// The token the hooks send.
    token: Option<&'a str>,
    /// The sidecar's variables.
    env: &'a [(String, Value)],
    /// The sidecar's config.
    config: &'a str,
    /// The ConfigMap holding it.
    config_map: String,
    /// `spec.shareProcessNamespace: true` before inject.
    shares_processes: bool,
}

/// Writes the changes into `template`, each recorded for [`uninject`]:
/// the rewritten probes, the preStop hooks, the sidecar and its volumes,
/// the grace period, the annotations. Returns the ConfigMap's name and
/// what the user should know.
fn apply(
    template: &mut Value,
    workload: &Workload,
    options: &Options,
    changes: Changes<'_>,
    refuse: &Refuse<'_>,
) -> Result<(String, Vec<String>), Refusal> {
    let mut warnings = Vec::new();
    let mut rec = Recorder::new();
    rewrite_probes(template, &mut rec, &changes, options.port, refuse)?;
    let process_checks = changes
        .taken
        .iter()
        .any(|t| matches!(&t.moved.handler, Handler::Native(n) if n.kind == "process"));
    if process_checks && !changes.shares_processes {
        warnings.push(format!(
            "{workload}: shareProcessNamespace set to true (--share-process-namespace), for the process checks: every container now sees the others' processes and /proc/PID/environ, and PID 1 is the pause container"
        ));
        rec.set(template, &["spec", "shareProcessNamespace"], true.into());
    }
    add_sidecar(template, &mut rec, workload, options, &changes);
    warnings.extend(raise_grace(template, &mut rec, workload, options));
    annotate(template, &mut rec, options, &changes);
    let text = rec.finish();
    if let Some(Value::Mapping(a)) = lookup(template, &["metadata", "annotations"]) {
        a.insert(record::ANNOTATION.into(), text.into());
    }
    Ok((changes.config_map, warnings))
}

/// Replaces each taken probe with one asking the sidecar on `port`, and
/// gives the hooked containers the preStop hook. Containers are reached
/// by index: a search by name per field would cost the square of their
/// number (issue 27).
fn rewrite_probes(
    template: &mut Value,
    rec: &mut Recorder,
    changes: &Changes<'_>,
    port: u16,
    refuse: &Refuse<'_>,
) -> Result<(), Refusal> {
    let mut rewritten = Vec::with_capacity(changes.taken.len());
    for t in changes.taken {
        let m = &t.moved;
        let probe = m.rewritten(port, &t.original).map_err(|e| {
            refuse.at(
                &format!("spec.containers[{}].{}", m.container, probe::field(m.kind)),
                e.to_string(),
            )
        })?;
        rewritten.push((t.index, m.container.as_str(), probe::field(m.kind), probe));
    }
    let list = template
        .get_mut("spec")
        .and_then(|s| s.get_mut("containers"))
        .and_then(Value::as_sequence_mut)
        .expect("the containers were read by survey");
    for (i, name, field, probe) in rewritten {
        let c = list[i].as_mapping_mut().expect("a container is a mapping");
        rec.set_in(c, &["spec", "containers", name, field], probe);
    }
    let Some(token) = changes.token else {
        return Ok(());
    };
    for &i in changes.hooked {
        let name = name_of(&changes.containers[i]);
        let c = list[i].as_mapping_mut().expect("a container is a mapping");
        let mut lifecycle = match c.get("lifecycle") {
            Some(Value::Mapping(m)) => m.clone(),
            _ => Mapping::new(),
        };
        lifecycle.insert("preStop".into(), prestop(port, token));
        rec.set_in(
            c,
            &["spec", "containers", name, "lifecycle"],
            Value::Mapping(lifecycle),
        );
    }
    Ok(())
}

/// Adds the sidecar container and the volumes of its config and token.
fn add_sidecar(
    template: &mut Value,
    rec: &mut Recorder,
    workload: &Workload,
    options: &Options,
    changes: &Changes<'_>,
) {
    let token = changes.token.is_some();
    let sidecar = sidecar(options, token, changes.taken.len(), changes.env);
    match options.sidecar {
        Sidecar::Native => rec.add_item(template, &["spec", "initContainers"], sidecar, false),
        Sidecar::Classic => rec.add_item(template, &["spec", "containers"], sidecar, true),
    }
    rec.add_item(
        template,
        &["spec", "volumes"],
        volume(CONFIG_VOLUME, "configMap", "name", &changes.config_map),
        false,
    );
    if token {
        rec.add_item(
            template,
            &["spec", "volumes"],
            volume(TOKEN_VOLUME, "secret", "secretName", &workload.secret()),
            false,
        );
    }
}

/// Raises `terminationGracePeriodSeconds` to `drain.max` and
/// [`APP_SHUTDOWN`] where it is shorter; the warning that says so.
fn raise_grace(
    template: &mut Value,
    rec: &mut Recorder,
    workload: &Workload,
    options: &Options,
) -> Option<String> {
    let grace = template
        .get("spec")
        .and_then(|s| s.get("terminationGracePeriodSeconds"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_GRACE);
    let needed = (options.drain_max + APP_SHUTDOWN).as_secs_f64().ceil() as u64;
    if grace >= needed {
        return None;
    }
    rec.set(
        template,
        &["spec", "terminationGracePeriodSeconds"],
        needed.into(),
    );
    Some(format!(
        "{workload}: terminationGracePeriodSeconds raised from {grace} to {needed}: drain.max ({}) and {}s for the app after it",
        humantime::format_duration(options.drain_max),
        APP_SHUTDOWN.as_secs()
    ))
}

/// The config's hash (a new one rolls the pods) and, for a classic
/// sidecar, the app as the default container.
fn annotate(template: &mut Value, rec: &mut Recorder, options: &Options, changes: &Changes<'_>) {
    rec.ensure_map(template, &["metadata"]);
    rec.ensure_map(template, &["metadata", "annotations"]);
    rec.set(
        template,
        &["metadata", "annotations", HASH_ANNOTATION],
        hash(changes.config).into(),
    );
    let has_default = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
        .is_some();
    if options.sidecar == Sidecar::Classic && !has_default {
        // The classic sidecar comes first: `kubectl logs` and `exec` pick
        // the app, not it.
        let first = changes.containers[0].get("name").cloned().unwrap_or(Value::Null);
        rec.set(
            template,
            &[
                "metadata",
                "annotations",
                "kubectl.kubernetes.io/default-container",
            ],
            first,
        );
    }
}

/// What [`uninject`] found in an injected template.
#[derive(Debug, Clone, Default)]
pub struct Uninjected {
    /// The token its preStop hooks sent, to inject again with the same.
    pub token: Option<String>,
    /// Fields changed since `inject` that could not be restored.
    pub(crate) warnings: Vec<String>,
    /// Every field restored or removed, from the pod template
    /// (`spec.containers[web].livenessProbe`), for the user to see.
    pub(crate) restored: Vec<String>,
}

/// Restores `template` as it was before [`inject`]; `None` when it was
/// not injected.
///
/// The record is an annotation anyone who writes the manifest can write,
/// so it is checked first (issue 27): every change it lists must be one
/// `inject` makes — a moved probe, a preStop hook, the sidecar, its
/// volumes, the grace period, its own annotations — with a former value
/// `inject` would have replaced and the value `inject` writes still in
/// place, and the sidecar must be among them. Anything else (a kind, a
/// name, an image, a securityContext, hostPID, a volume of the host's) is
/// refused, naming the field; nothing is restored then.
pub fn uninject(template: &mut Value, workload: &Workload) -> Result<Option<Uninjected>, Refusal> {
    let refuse = |field: &str, message: String| Refusal {
        object: workload.to_string(),
        field: format!("{}{field}", workload.template_path()),
        message,
    };
    let record_field = format!("metadata.annotations.{}", record::ANNOTATION);
    let record = match record::read(template) {
        None => return Ok(None),
        Some(Ok(r)) => r,
        Some(Err(message)) => return Err(refuse(&record_field, format!("cannot be read: {message}"))),
    };
    let token = verify(template, &record).map_err(|e| {
        refuse(
            &e.field,
            format!(
                "{}: the {} record does not match what inject writes",
                e.message,
                record::ANNOTATION
            ),
        )
    })?;
    let restored = record
        .changes
        .iter()
        .map(|e| format!("{}{}", workload.template_path(), field_name(&e.at)))
        .collect();
    record::remove(template);
    let warnings = record::undo(template, &record)
        .into_iter()
        .map(|path| format!("{workload}: {path} was changed since inject and could not be restored"))
        .collect();
    Ok(Some(Uninjected {
        token,
        warnings,
        restored,
    }))
}

/// `spec.containers[web].livenessProbe` for a record's path.
fn field_name(at: &[String]) -> String {
    let mut out = String::new();
    let mut item = false;
    for step in at {
        if item {
            out.push_str(&format!("[{step}]"));
            item = false;
            continue;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(step);
        item =
            matches!(step.as_str(), "containers" | "initContainers" | "volumes") && out.starts_with("spec.");
    }
    out
}

/// Checks `record` against what [`inject`] writes and against `template`
/// as it is; returns the preStop hooks' token. An error names the field
/// of the pod template.
fn verify(template: &Value, record: &record::Record) -> Result<Option<String>, FieldError> {
    let absent_or_null = |was: &Option<Value>| matches!(was, None | Some(Value::Null));
    let pod = Written::read(template);
    let lists_sidecar = record.changes.iter().any(|e| {
        matches!(
            e.at.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            ["spec", "initContainers", SIDECAR]
                | ["spec", "containers", SIDECAR]
                | ["spec", "initContainers"]
        )
    });
    if !lists_sidecar || pod.sidecar.is_none() {
        return Err(FieldError::new(
            format!("metadata.annotations.{}", record::ANNOTATION),
            "lists no healthproxy sidecar, or the pod has none".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut token: Option<String> = None;
    for entry in &record.changes {
        let at: Vec<&str> = entry.at.iter().map(String::as_str).collect();
        if !seen.insert(&entry.at) {
            return Err(FieldError::new(field_name(&entry.at), "listed twice".into()));
        }
        let verdict = match at.as_slice() {
            [
                "spec",
                "containers",
                name,
                kind @ ("livenessProbe" | "readinessProbe" | "startupProbe"),
            ] if *name != SIDECAR => pod.verify_probe(name, kind, entry),
            ["spec", "containers", name, "lifecycle"] if *name != SIDECAR => {
                pod.verify_hook(name, entry, &mut token)
            }
            ["spec", "initContainers", SIDECAR] | ["spec", "containers", SIDECAR] if entry.was.is_none() => {
                Ok(())
            }
            ["spec", "initContainers"] if absent_or_null(&entry.was) => Ok(()),
            ["spec", "volumes", CONFIG_VOLUME | TOKEN_VOLUME] if entry.was.is_none() => Ok(()),
            ["spec", "volumes"] if absent_or_null(&entry.was) => Ok(()),
            ["spec", "shareProcessNamespace"]
                if matches!(entry.was, None | Some(Value::Null) | Some(Value::Bool(false)))
                    && pod.shares_processes =>
            {
                verify_shared(record)
            }
            ["spec", "terminationGracePeriodSeconds"] => pod.verify_grace(entry),
            ["metadata"] if entry.was.is_none() => Ok(()),
            ["metadata", "annotations"] if absent_or_null(&entry.was) => Ok(()),
            ["metadata", "annotations", HASH_ANNOTATION]
                if matches!(entry.was, None | Some(Value::String(_))) =>
            {
                Ok(())
            }
            [
                "metadata",
                "annotations",
                "kubectl.kubernetes.io/default-container",
            ] if entry.was.is_none() => Ok(()),
            _ => Err("is not a field inject sets, or not to that former value"),
        };
        verdict.map_err(|why| FieldError::new(field_name(&entry.at), why.into()))?;
    }
    Ok(token)
}

/// An injected pod template, as [`verify`] reads it.
struct Written<'a> {
    /// `spec`.
    spec: Option<&'a Value>,
    /// The app containers by name, read once: a search per change would
    /// cost the square of their number (issue 27).
    containers: HashMap<&'a str, &'a Value>,
    /// The sidecar container.
    sidecar: Option<&'a Value>,
    /// The sidecar's port.
    port: Option<u16>,
    /// `spec.shareProcessNamespace: true`.
    shares_processes: bool,
}

impl<'a> Written<'a> {
    fn read(template: &'a Value) -> Written<'a> {
        let spec = template.get("spec");
        let list = |name: &str| spec.and_then(|s| s.get(name)).and_then(Value::as_sequence);
        let mut containers = HashMap::new();
        for c in list("containers").into_iter().flatten() {
            if let Some(name) = c.get("name").and_then(Value::as_str) {
                containers.entry(name).or_insert(c);
            }
        }
        let sidecar = list("initContainers")
            .into_iter()
            .flatten()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR))
            .or_else(|| containers.get(SIDECAR).copied());
        let port = sidecar
            .and_then(|c| c.get("ports"))
            .and_then(|p| p.get(0))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        Written {
            spec,
            containers,
            sidecar,
            port,
            shares_processes: shares_processes(template),
        }
    }

    /// A moved probe: the one inject writes for the probe it was.
    fn verify_probe(&self, name: &str, kind: &str, entry: &record::Entry) -> Result<(), &'static str> {
        let kind = match kind {
            "livenessProbe" => ProbeKind::Liveness,
            "readinessProbe" => ProbeKind::Readiness,
            _ => ProbeKind::Startup,
        };
        let Some(c) = self.containers.get(name).and_then(|c| c.as_mapping()) else {
            return Ok(()); // The container is gone: undo warns.
        };
        let (Some(Value::Mapping(was)), Some(port)) = (&entry.was, self.port) else {
            return Err("is not a probe inject takes over");
        };
        let Ok(Plan::Move(m)) = probe::plan(name, c, kind, was, self.shares_processes) else {
            return Err("is not a probe inject takes over");
        };
        if m.rewritten(port, was).ok().as_ref() != c.get(probe::field(kind)) {
            return Err("is not the probe inject wrote (changed since, or not inject's)");
        }
        Ok(())
    }

    /// A container's lifecycle: the preStop hook inject writes, sending
    /// the same `token` as the others, added to what was there.
    fn verify_hook(
        &self,
        name: &str,
        entry: &record::Entry,
        token: &mut Option<String>,
    ) -> Result<(), &'static str> {
        let Some(c) = self.containers.get(name) else {
            return Ok(());
        };
        let now = c.get("lifecycle").and_then(Value::as_mapping);
        let hook_token = now
            .and_then(|l| l.get("preStop"))
            .and_then(|p| hook_token(p, self.port?));
        let Some(hook_token) = hook_token else {
            return Err("its preStop hook is not the one inject writes");
        };
        if token.as_ref().is_some_and(|t| *t != hook_token) {
            return Err("its preStop hook sends another token than the others");
        }
        *token = Some(hook_token);
        let mut rest = now.cloned().unwrap_or_default();
        rest.shift_remove("preStop");
        let matches = match &entry.was {
            None | Some(Value::Null) => rest.is_empty(),
            Some(Value::Mapping(was)) => {
                let mut was = was.clone();
                let pre_stop = was.shift_remove("preStop");
                pre_stop.is_none_or(|p| p.is_null()) && was == rest
            }
            Some(_) => false,
        };
        if !matches {
            return Err("its former value is not one inject would have added a preStop hook to");
        }
        Ok(())
    }

    /// The grace period: inject only raises it.
    fn verify_grace(&self, entry: &record::Entry) -> Result<(), &'static str> {
        let now = self
            .spec
            .and_then(|s| s.get("terminationGracePeriodSeconds"))
            .and_then(Value::as_u64);
        let lower = match &entry.was {
            None | Some(Value::Null) => true,
            Some(v) => v.as_u64().zip(now).is_some_and(|(was, now)| was < now),
        };
        if !lower {
            return Err("inject only raises it");
        }
        Ok(())
    }
}

/// `shareProcessNamespace` set for a process check: the record lists a
/// pgrep probe it converted.
fn verify_shared(record: &record::Record) -> Result<(), &'static str> {
    let ours = record.changes.iter().any(|e| {
        e.at.len() == 4
            && e.at[1] == "containers"
            && e.was
                .as_ref()
                .and_then(|w| w.get("exec"))
                .and_then(|x| x.get("command"))
                .and_then(Value::as_sequence)
                .is_some_and(|c| c.iter().any(|a| a.as_str().is_some_and(|a| a.contains("pgrep"))))
    });
    if !ours {
        return Err("inject sets it only for a pgrep probe it converts");
    }
    Ok(())
}

/// The token of a preStop hook exactly as [`prestop`] writes it, with a
/// token as [`new_token`] makes (64 hexadecimal digits).
fn hook_token(hook: &Value, port: u16) -> Option<String> {
    let header = hook
        .get("httpGet")?
        .get("httpHeaders")?
        .get(0)?
        .get("value")?
        .as_str()?;
    let token = header.strip_prefix("Bearer ")?;
    let shaped = token.len() == 64
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (shaped && *hook == prestop(port, token)).then(|| token.to_string())
}

/// The sidecar's config file: the drain, the token file, and one check
/// per taken probe.
fn config_text(
    workload: &Workload,
    options: &Options,
    drain: &Drain,
    token: bool,
    taken: &[Taken],
) -> String {
    let (ports, mesh) = (&drain.ports, drain.mesh);
    let mut out = format!(
        "# Generated by `healthproxy inject` from {workload}: its containers'\n\
         # probes, with their handlers and timing. The containers' probes ask\n\
         # this sidecar instead; `healthproxy uninject` puts them back.\n\
         listen = \"[::]:{}\"\n\n[drain]\nmax = \"{}\"\n",
        options.port,
        humantime::format_duration(options.drain_max)
    );
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        out.push_str(&format!("ports = [{}]\n", list.join(", ")));
    }
    if let Some(uid) = mesh.proxy_uid() {
        out.push_str(&format!(
            "# The app's traffic comes through the mesh's proxy in the pod.\nmesh = \"{}\"\n",
            mesh.name()
        ));
        let default = match mesh {
            Mesh::Istio { .. } => crate::config::ISTIO_PROXY_UID,
            _ => crate::config::LINKERD_PROXY_UID,
        };
        if uid != default {
            out.push_str(&format!("mesh_proxy_uid = {uid}\n"));
        }
    }
    if token {
        out.push_str(&format!("token_file = \"{TOKEN_DIR}/token\"\n"));
    }
    if drain.exit_with_app {
        out.push_str(
            "# A Job's pod completes only once every container has exited.\nexit_when_app_exits = true\n",
        );
    }
    for t in taken {
        out.push('\n');
        out.push_str(&t.moved.toml());
    }
    out
}

fn prestop(port: u16, token: &str) -> Value {
    serde_yaml_ng::from_str(&format!(
        "httpGet:\n  path: /prestop\n  port: {port}\n  httpHeaders:\n    - name: Authorization\n      value: Bearer {token}\n"
    ))
    .expect("the preStop hook parses")
}

fn volume(name: &str, kind: &str, key: &str, source: &str) -> Value {
    let mut inner = Mapping::new();
    inner.insert(key.into(), source.into());
    let mut v = Mapping::new();
    v.insert("name".into(), name.into());
    v.insert(kind.into(), Value::Mapping(inner));
    Value::Mapping(v)
}

/// The sidecar container, as deploy/native/sidecar.yaml and
/// deploy/classic/sidecar.yaml write it.
fn sidecar(options: &Options, token: bool, checks: usize, env: &[(String, Value)]) -> Value {
    // The memory limit follows from the budget of the generated config
    // (the default `[server]` limits, no gRPC endpoint).
    let budget = crate::server::memory_budget(crate::config::DEFAULT_MAX_CONNECTIONS, checks, false);
    let limit_mib = crate::server::memory_limit(budget) >> 20;
    let native = options.sidecar == Sidecar::Native;
    let port = options.port;
    let mut text = format!(
        "name: {SIDECAR}\nimage: {}\n",
        serde_json::to_string(&options.image).expect("text")
    );
    if native {
        text.push_str("restartPolicy: Always\n");
    }
    text.push_str(&format!(
        "args: [\"run\", \"--config\", \"{CONFIG_DIR}/config.toml\", \"--log-format\", \"json\"]\n\
         ports:\n  - name: health\n    containerPort: {port}\n"
    ));
    if native {
        // The kubelet starts the app once this has passed.
        text.push_str(&format!(
            "startupProbe:\n  httpGet: {{path: /healthz, port: {port}}}\n  periodSeconds: 1\n  timeoutSeconds: 1\n  failureThreshold: 30\n"
        ));
    }
    text.push_str(&format!(
        "livenessProbe:\n  httpGet: {{path: /healthz, port: {port}}}\n  periodSeconds: 10\n  timeoutSeconds: 1\n  failureThreshold: 3\n\
         resources:\n  requests: {{cpu: 10m, memory: 16Mi}}\n  limits: {{memory: {limit_mib}Mi}}\n\
         securityContext:\n  runAsNonRoot: true\n  runAsUser: 65532\n  runAsGroup: 65532\n  readOnlyRootFilesystem: true\n  \
         allowPrivilegeEscalation: false\n  privileged: false\n  capabilities: {{drop: [\"ALL\"]}}\n  seccompProfile: {{type: RuntimeDefault}}\n\
         volumeMounts:\n  - {{name: {CONFIG_VOLUME}, mountPath: {CONFIG_DIR}, readOnly: true}}\n"
    ));
    if token {
        text.push_str(&format!(
            "  - {{name: {TOKEN_VOLUME}, mountPath: {TOKEN_DIR}, readOnly: true}}\n"
        ));
    }
    let container: Mapping = serde_yaml_ng::from_str(&text).expect("the sidecar container parses");
    if env.is_empty() {
        return Value::Mapping(container);
    }
    // After `args`, where a reader looks for what the process is given.
    let mut out = Mapping::new();
    for (k, v) in container {
        let after = k.as_str() == Some("args");
        out.insert(k, v);
        if after {
            out.insert(
                "env".into(),
                Value::Sequence(env.iter().map(|(_, item)| item.clone()).collect()),
            );
        }
    }
    Value::Mapping(out)
}

/// `spec.shareProcessNamespace: true`: every container sees the others'
/// processes, the sidecar too.
pub(crate) fn shares_processes(template: &Value) -> bool {
    template
        .get("spec")
        .and_then(|s| s.get("shareProcessNamespace"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The first 16 hex digits of the config's SHA-256.
fn hash(config: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, config.as_bytes());
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes, in hex.
fn new_token() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> Workload {
        Workload {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: None,
        }
    }

    fn read(container: &str, kind: ProbeKind, plan: Plan) -> Read {
        Read {
            index: 0,
            container: container.into(),
            kind,
            original: Mapping::new(),
            plan,
        }
    }

    fn tcp(container: &str, kind: ProbeKind, host: Option<&str>, port: u16) -> Plan {
        Plan::Move(Moved {
            container: container.into(),
            kind,
            handler: Handler::Tcp {
                host: host.map(str::to_string),
                port,
            },
            timing: probe::Timing {
                initial_delay: 0,
                period: 10,
                timeout: 1,
                success: 1,
                failure: 3,
            },
        })
    }

    #[test]
    fn decide_moves_probes_keeps_what_cannot_move_and_lists_the_pods_ports() {
        let w = workload();
        let probes = vec![
            read(
                "app",
                ProbeKind::Liveness,
                tcp("app", ProbeKind::Liveness, None, 8080),
            ),
            read("app", ProbeKind::Readiness, Plan::Keep("a reason".into())),
            read(
                "app",
                ProbeKind::Startup,
                tcp("app", ProbeKind::Startup, None, 8080),
            ),
            read(
                "db",
                ProbeKind::Liveness,
                tcp("db", ProbeKind::Liveness, Some("10.0.0.1"), 5432),
            ),
            read(
                "db",
                ProbeKind::Readiness,
                tcp("db", ProbeKind::Readiness, Some("::1"), 5433),
            ),
        ];
        let d = decide(&w, probes, None, 9775, &Refuse(&w)).unwrap();
        assert_eq!(d.taken.len(), 4);
        assert_eq!(
            d.warnings,
            [
                "Deployment web: container app: readinessProbe is an exec probe kept with the kubelet: a reason"
            ]
        );
        // 10.0.0.1 is not the pod: no port of its own.
        assert_eq!(d.probed, [5433, 8080]);
    }

    #[test]
    fn decide_refuses_a_probe_of_the_sidecars_port_before_what_stopped_the_survey() {
        let w = workload();
        let stopped = Refuse(&w).at("spec.containers[1]", "must be a mapping");
        let probes = vec![read(
            "app",
            ProbeKind::Liveness,
            tcp("app", ProbeKind::Liveness, None, 9775),
        )];
        let e = decide(&w, probes, Some(stopped.clone()), 9775, &Refuse(&w)).unwrap_err();
        assert_eq!(e.field, "spec.template.spec.containers[app].livenessProbe");
        assert!(e.message.starts_with("probes port 9775, the sidecar's"), "{e}");
        let probes = vec![read(
            "app",
            ProbeKind::Liveness,
            tcp("app", ProbeKind::Liveness, None, 8080),
        )];
        assert_eq!(
            decide(&w, probes, Some(stopped.clone()), 9775, &Refuse(&w)).unwrap_err(),
            stopped
        );
        // Another host's port 9775 is not the sidecar's.
        let probes = vec![read(
            "app",
            ProbeKind::Liveness,
            tcp("app", ProbeKind::Liveness, Some("db"), 9775),
        )];
        assert_eq!(
            decide(&w, probes, None, 9775, &Refuse(&w)).unwrap().taken.len(),
            1
        );
    }
    #[test]
    fn decide_keeps_an_exec_probe_whose_variable_another_container_defines_otherwise() {
        let w = workload();
        let redis = |container: &str, secret: &str| {
            let entry: Value = serde_yaml_ng::from_str(&format!(
                "name: REDIS_PASSWORD\nvalueFrom: {{secretKeyRef: {{name: {secret}, key: p}}}}"
            ))
            .unwrap();
            let converted = super::super::exec::Converted {
                command: "redis-cli ping".into(),
                kind: "redis",
                keys: Vec::new(),
                env: vec![("REDIS_PASSWORD".into(), entry)],
                timeout: None,
                port: Some(6379),
                host: None,
            };
            let mut plan = tcp(container, ProbeKind::Liveness, None, 6379);
            if let Plan::Move(m) = &mut plan {
                m.handler = Handler::Native(Box::new(converted));
            }
            read(container, ProbeKind::Liveness, plan)
        };
        let probes = vec![redis("a", "one"), redis("b", "one"), redis("c", "two")];
        let d = decide(&w, probes, None, 9775, &Refuse(&w)).unwrap();
        assert_eq!(d.taken.len(), 2);
        assert_eq!(d.env.len(), 1);
        assert_eq!(
            d.warnings,
            [
                "Deployment web: container c: livenessProbe is an exec probe kept with the kubelet: it reads $REDIS_PASSWORD, which another container defines otherwise"
            ]
        );
    }
}

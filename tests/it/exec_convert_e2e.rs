//! `inject` converting exec probes, end to end (issue 30): a pod whose
//! containers each carry one exec probe of a recognised form goes through
//! the real `healthproxy inject`; the ConfigMap's config is run by the real
//! binary with the sidecar container's environment (its `secretKeyRef`s
//! resolved as the kubelet resolves them); and in the same test each
//! original command is run as the kubelet runs it (argv exec'ed, no shell
//! of its own, the container's environment, `$(VAR)` expanded from the
//! container's static `env` only, killed at `timeoutSeconds`) against the
//! same real server. The sidecar's verdict for the container
//! (`/containers/C/readyz` or `livez`, once the check has run) must be the
//! command's exit status.
//!
//! The servers are issue 29's (tests/it/db_*.rs), one per kind per test
//! binary: their state walks call this module's forms ([`postgres`],
//! [`redis`], [`mysql`], [`memcached`]) in each state, at the same time
//! as their native checks, so a state is reached once for both. The
//! states that leave the shared PostgreSQL server as it is are asked
//! here, and so are ZooKeeper (which no other test needs), the HTTP and
//! TCP forms against the test app, and `pgrep`.
//!
//! Each comparison's wall time is added up in
//! `target/tmp/exec-convert-e2e.txt`, with each state's verdicts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::support::{Process, Proxy, binary, eventually, refusing_port, request, tool};

/// The probes' `timeoutSeconds`: the kubelet kills the command then, the
/// check gives up then. The survey's most common value; long enough for a
/// loaded machine to start a client (at 2 s, pg_isready was killed at a
/// load of 11 on two cores), and each frozen state costs it once.
pub const TIMEOUT_SECONDS: u64 = 5;

/// One variable of a container's `env`.
#[derive(Debug, Clone)]
pub enum Var {
    /// `value: ...`.
    Plain(String, String),
    /// `valueFrom.secretKeyRef`: the variable, the Secret, its key.
    Secret(String, String, String),
}

impl Var {
    pub fn plain(name: &str, value: impl ToString) -> Var {
        Var::Plain(name.into(), value.to_string())
    }

    pub fn secret(name: &str, secret: &str, key: &str) -> Var {
        Var::Secret(name.into(), secret.into(), key.into())
    }

    fn name(&self) -> &str {
        match self {
            Var::Plain(name, _) | Var::Secret(name, ..) => name,
        }
    }
}

/// One app container with one exec probe.
#[derive(Debug, Clone)]
pub struct Form {
    /// The container's name (a DNS label): the form, shortly.
    pub container: String,
    /// `readinessProbe` or `livenessProbe`.
    pub liveness: bool,
    /// `exec.command`, as written in the manifest.
    pub command: Vec<String>,
    /// The container's `env`.
    pub env: Vec<Var>,
    /// `inject` must keep the probe exec (it cannot be carried over
    /// exactly, for the reason given here).
    pub kept: Option<&'static str>,
}

impl Form {
    /// A readiness probe running `command`.
    pub fn new(container: &str, command: &[&str]) -> Form {
        Form {
            container: container.into(),
            liveness: false,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            kept: None,
        }
    }

    /// A form `inject` must leave exec, because `why`.
    pub fn kept(mut self, why: &'static str) -> Form {
        self.kept = Some(why);
        self
    }

    /// `sh -c SCRIPT`.
    pub fn sh(container: &str, script: &str) -> Form {
        Form::new(container, &["sh", "-c", script])
    }

    pub fn env(mut self, vars: &[Var]) -> Form {
        self.env.extend(vars.iter().cloned());
        self
    }

    /// As a `livenessProbe` instead.
    pub fn liveness(mut self) -> Form {
        self.liveness = true;
        self
    }

    fn probe_field(&self) -> &'static str {
        if self.liveness {
            "livenessProbe"
        } else {
            "readinessProbe"
        }
    }

    fn endpoint(&self) -> String {
        let probe = if self.liveness { "livez" } else { "readyz" };
        format!("/containers/{}/{probe}", self.container)
    }

    fn check_name(&self) -> String {
        let kind = if self.liveness { "liveness" } else { "readiness" };
        format!("{}-{kind}", self.container)
    }

    /// The command as the kubelet runs it: `$(VAR)` expanded from the
    /// container's static env (`ExpandContainerCommandOnlyStatic`: a
    /// variable from a Secret is there, with an empty value).
    fn kubelet_argv(&self) -> Vec<String> {
        let statics: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|v| match v {
                Var::Plain(name, value) => (name.as_str(), value.as_str()),
                Var::Secret(name, ..) => (name.as_str(), ""),
            })
            .collect();
        self.command
            .iter()
            .map(|arg| kubelet_expand(arg, &|name| statics.get(name).map(|v| v.to_string())))
            .collect()
    }
}

/// The kubelet's `$(VAR)` expansion (k8s third_party/forked/golang/
/// expansion `Expand`): `$(NAME)` becomes the value when NAME is known and
/// stays as written when not; `$$` is one `$`; any other `$` stays.
pub fn kubelet_expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => out.push_str(&format!("$({name})")),
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // The operator and the next character, as written.
                    let next = rest.chars().next().unwrap();
                    out.push('$');
                    out.push(next);
                    next.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// A pod of exec probes and the Secrets its containers refer to.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub forms: Vec<Form>,
    /// `(secret, key) -> value`.
    pub secrets: BTreeMap<(String, String), String>,
    /// `shareProcessNamespace: true`.
    pub share_process_namespace: bool,
}

impl Pod {
    pub fn new(name: &str, forms: Vec<Form>) -> Pod {
        Pod {
            name: name.into(),
            forms,
            secrets: BTreeMap::new(),
            share_process_namespace: false,
        }
    }

    pub fn secret(mut self, secret: &str, key: &str, value: &str) -> Pod {
        self.secrets.insert((secret.into(), key.into()), value.into());
        self
    }

    /// The manifest: the Secrets, then the Pod (JSON, which is YAML).
    pub fn manifest(&self) -> String {
        let mut by_secret: BTreeMap<&str, serde_json::Map<String, Json>> = BTreeMap::new();
        for ((secret, key), value) in &self.secrets {
            by_secret
                .entry(secret)
                .or_default()
                .insert(key.clone(), Json::String(value.clone()));
        }
        let mut docs: Vec<String> = by_secret
            .into_iter()
            .map(|(name, data)| {
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})
                    .to_string()
            })
            .collect();
        let containers: Vec<Json> = self
            .forms
            .iter()
            .map(|f| {
                let env: Vec<Json> = f
                    .env
                    .iter()
                    .map(|v| match v {
                        Var::Plain(name, value) => json!({"name": name, "value": value}),
                        Var::Secret(name, secret, key) => {
                            json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
                        }
                    })
                    .collect();
                let mut c = json!({"name": f.container, "image": "registry.example/app:1"});
                if !env.is_empty() {
                    c["env"] = Json::Array(env);
                }
                c[f.probe_field()] = json!({
                    "exec": {"command": f.command},
                    "periodSeconds": 1,
                    "timeoutSeconds": TIMEOUT_SECONDS,
                    "successThreshold": 1,
                    "failureThreshold": 1,
                });
                c
            })
            .collect();
        let mut spec = json!({"containers": containers});
        if self.share_process_namespace {
            spec["shareProcessNamespace"] = Json::Bool(true);
        }
        docs.push(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.name}, "spec": spec})
                .to_string(),
        );
        docs.join("\n---\n")
    }

    /// Runs the real `healthproxy inject` on the manifest; every form's
    /// probe must have moved to the sidecar.
    pub fn inject(&self) -> Injected {
        self.inject_with(&[])
    }

    /// [`Pod::inject`] with more arguments for `inject`.
    pub fn inject_with(&self, args: &[&str]) -> Injected {
        let manifest = self.manifest();
        let out = crate::support::piped(
            std::process::Command::new(binary())
                .args(["inject", "--image", "registry.test/healthproxy:e2e"])
                .args(args)
                .arg("-"),
            &manifest,
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "inject failed: {said}\n{manifest}");
        let objects = objects(&stdout);
        let pod = objects
            .iter()
            .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == self.name.as_str())
            .expect("the pod is in inject's output")
            .clone();
        let spec = &pod["spec"];
        for f in &self.forms {
            let container = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == f.container.as_str())
                .unwrap();
            let probe = &container[f.probe_field()];
            if let Some(why) = f.kept {
                assert!(
                    probe["exec"].is_object() && said.contains(&format!("container {}:", f.container)),
                    "`{}` (container {}) must stay exec ({why}), but: {probe}\ninject said:\n{said}",
                    f.command.join(" "),
                    f.container,
                );
                continue;
            }
            assert_eq!(
                probe["httpGet"]["path"].as_str(),
                Some(f.endpoint().as_str()),
                "`{}` (container {}) was not converted: {}\ninject said:\n{said}",
                f.command.join(" "),
                f.container,
                probe
            );
        }
        if self.forms.iter().all(|f| f.kept.is_some()) {
            // Nothing moved: no sidecar to run.
            return Injected {
                pod: self.clone(),
                config: String::new(),
                sidecar: Json::Null,
                volumes: Vec::new(),
                secret_objects: Vec::new(),
            };
        }
        let volume = |name: &str| {
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("volume {name}"))
        };
        let config_map = volume("healthproxy-config")["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let config = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map.as_str())
            .expect("the mounted ConfigMap is in the stream")["data"]["config.toml"]
            .as_str()
            .unwrap()
            .to_string();
        // A password's value (the short ones, such as a wrong password
        // "x", would be found in any text).
        for ((secret, key), value) in self
            .secrets
            .iter()
            .filter(|((_, k), v)| k.contains("password") && v.len() >= 6)
        {
            assert!(
                !config.contains(value.as_str()),
                "the value of Secret {secret}'s {key} is in the ConfigMap:\n{config}"
            );
        }
        let sidecar = spec["initContainers"]
            .as_array()
            .into_iter()
            .chain(spec["containers"].as_array())
            .flatten()
            .find(|c| c["name"] == "healthproxy")
            .expect("the sidecar container")
            .clone();
        let secret_objects: Vec<Json> = objects
            .iter()
            .filter(|o| o["kind"] == "Secret")
            .cloned()
            .collect();
        Injected {
            pod: self.clone(),
            config,
            sidecar,
            volumes: spec["volumes"].as_array().cloned().unwrap_or_default(),
            secret_objects,
        }
    }
}

/// What `inject` made of a [`Pod`].
#[derive(Debug)]
pub struct Injected {
    pub pod: Pod,
    /// The ConfigMap's `config.toml`.
    pub config: String,
    /// The sidecar container, as injected.
    pub sidecar: Json,
    /// The pod's volumes, as injected.
    volumes: Vec<Json>,
    /// The Secrets of the output stream (the original ones and inject's).
    secret_objects: Vec<Json>,
}

/// One form's verdicts in one state.
#[derive(Debug)]
struct Verdicts {
    form: String,
    code: Option<i32>,
    output: String,
    status: u16,
}

impl Injected {
    /// A Secret's key, as the kubelet gives it: from the Secrets of the
    /// stream (the pod's own and the token inject generates).
    fn secret_value(&self, secret: &str, key: &str) -> String {
        if let Some(value) = self.pod.secrets.get(&(secret.to_string(), key.to_string())) {
            return value.clone();
        }
        self.secret_objects
            .iter()
            .find(|s| s["metadata"]["name"] == secret)
            .and_then(|s| s["stringData"][key].as_str())
            .unwrap_or_else(|| panic!("Secret {secret} has no key {key}"))
            .to_string()
    }

    /// The sidecar's environment as the kubelet makes it: values, and
    /// the Secrets' keys it refers to.
    fn sidecar_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for var in self.sidecar["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = var["value"].as_str() {
                // `$(VAR)` of a variable defined before it, as the kubelet
                // expands a container's env.
                kubelet_expand(v, &|n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                self.secret_value(r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
            } else if let Some(r) = var["valueFrom"]["fieldRef"].as_object() {
                match r["fieldPath"].as_str().unwrap() {
                    "metadata.name" => self.pod.name.clone(),
                    "metadata.namespace" => "default".into(),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                    other => panic!("the test gives no {other}"),
                }
            } else {
                panic!("the test cannot resolve the sidecar's {var}");
            };
            env.push((name, value));
        }
        env
    }

    /// The sidecar's mounts, made where the test can put them: each
    /// Secret volume a directory of its keys; the config's mount paths
    /// rewritten to them.
    fn mount(&self, dir: &Path) -> String {
        let mut config = self.config.clone();
        for mount in self.sidecar["volumeMounts"].as_array().into_iter().flatten() {
            let name = mount["name"].as_str().unwrap();
            let path = mount["mountPath"].as_str().unwrap();
            if name == "healthproxy-config" {
                continue;
            }
            let volume = self.volumes.iter().find(|v| v["name"] == name).unwrap();
            let Some(secret) = volume["secret"]["secretName"].as_str() else {
                panic!("the test cannot mount {volume}");
            };
            let here = dir.join(name);
            std::fs::create_dir_all(&here).unwrap();
            let keys: Vec<String> = match volume["secret"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().unwrap();
                        std::fs::write(
                            here.join(i["path"].as_str().unwrap()),
                            self.secret_value(secret, key),
                        )
                        .unwrap();
                        key.to_string()
                    })
                    .collect(),
                None => {
                    let mut keys: Vec<String> = self
                        .pod
                        .secrets
                        .keys()
                        .filter(|(s, _)| s == secret)
                        .map(|(_, k)| k.clone())
                        .collect();
                    if let Some(s) = self
                        .secret_objects
                        .iter()
                        .find(|s| s["metadata"]["name"] == secret)
                    {
                        keys.extend(
                            s["stringData"]
                                .as_object()
                                .into_iter()
                                .flatten()
                                .map(|(k, _)| k.clone()),
                        );
                    }
                    for key in &keys {
                        std::fs::write(here.join(key), self.secret_value(secret, key)).unwrap();
                    }
                    keys
                }
            };
            assert!(!keys.is_empty(), "Secret {secret} has keys");
            config = config.replace(path, here.to_str().unwrap());
        }
        config
    }

    /// Starts the sidecar as the pod would: the injected config, its
    /// mounts and its environment only.
    fn start(&self, dir: &Path) -> Proxy {
        let config = self.mount(dir);
        let path = dir.join("config.toml");
        std::fs::write(&path, &config).unwrap();
        let args: Vec<&str> = self.sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args.first(), Some(&"run"), "the sidecar runs `run`: {args:?}");
        let mut command = std::process::Command::new(binary());
        command.env_clear().envs(self.sidecar_env());
        Proxy::launch(command, &path, "127.0.0.1:0")
    }

    /// In the server's present state: the sidecar started on the
    /// injected config, every original command run as the kubelet would
    /// at the same time; once every check has run, each container's
    /// verdict must be its command's exit status.
    pub async fn compare(&self, state: &str) {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let forms: Vec<&Form> = self.pod.forms.iter().filter(|f| f.kept.is_none()).collect();
        let kubelet = || {
            forms
                .iter()
                .map(|f| {
                    let argv = f.kubelet_argv();
                    let env = self.container_env(f, &home);
                    tokio::spawn(async move { run_as_kubelet(&argv, &env).await })
                })
                .collect::<Vec<_>>()
        };
        let mut reals = Vec::new();
        let proxy = if self.pod.share_process_namespace {
            // One after the other, and before the sidecar: each command
            // and the process check would see the others' processes
            // (`pgrep -f X` holds X), which in the pod are gone once the
            // probes are converted.
            for f in &forms {
                reals.push(run_as_kubelet(&f.kubelet_argv(), &self.container_env(f, &home)).await);
            }
            self.start(dir.path())
        } else {
            let proxy = self.start(dir.path());
            for run in kubelet() {
                reals.push(run.await.unwrap());
            }
            proxy
        };
        // Every check has run once (the first run comes at once, at its
        // phase in the period); its verdict is then that run's, the
        // probes' thresholds being 1.
        let names: Vec<String> = forms.iter().map(|f| f.check_name()).collect();
        eventually(
            Duration::from_secs(30),
            &format!("{state}: every check's first run"),
            || async {
                let text = proxy.get("/metrics").await.body;
                names.iter().all(|name| runs(&text, name) >= 1.0)
            },
        )
        .await;
        let mut verdicts = Vec::new();
        for (f, (code, output)) in forms.iter().zip(reals) {
            let status = request(proxy.addr, "GET", &format!("{}?verbose", f.endpoint()), &[]).await;
            verdicts.push((
                Verdicts {
                    form: f.command.join(" "),
                    code,
                    output,
                    status: status.status,
                },
                status.body,
            ));
        }
        let wrong: Vec<String> = verdicts
            .iter()
            .filter(|(v, _)| (v.code == Some(0)) != (v.status == 200))
            .map(|(v, body)| {
                format!(
                    "`{}` exited {:?} ({}) but the sidecar answered {}: {}",
                    v.form,
                    v.code,
                    v.output.trim(),
                    v.status,
                    body.trim()
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{state}: {} of {} forms disagree:\n{}\nconfig:\n{}",
            wrong.len(),
            verdicts.len(),
            wrong.join("\n"),
            self.config
        );
        let passed = verdicts.iter().filter(|(v, _)| v.status == 200).count();
        record(&format!(
            "{state}: {} forms, {passed} pass, {} fail, {:.1} s",
            verdicts.len(),
            verdicts.len() - passed,
            started.elapsed().as_secs_f64()
        ));
    }

    /// A container's environment as its process sees it: the image's
    /// (PATH, HOME) and its `env`, Secrets resolved.
    fn container_env(&self, f: &Form, home: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".to_string(), home.display().to_string()),
        ];
        for var in &f.env {
            let value = match var {
                Var::Plain(_, value) => value.clone(),
                Var::Secret(_, secret, key) => self.secret_value(secret, key),
            };
            env.retain(|(k, _)| k != var.name());
            env.push((var.name().to_string(), value));
        }
        env
    }
}

// === The forms, per server kind ===

/// The exec probes of Redis manifests, against a redis-server on `port`;
/// `password`: the one the forms give (from a Secret), or none. Called
/// by tests/it/db_redis.rs in each state of its server.
pub async fn redis(state: &str, port: u16, password: Option<&str>) {
    let port_var = Var::plain("REDIS_PORT", port);
    let mut forms = vec![
        Form::new(
            "argv",
            &["redis-cli", "-h", "127.0.0.1", "-p", "$(REDIS_PORT)", "ping"],
        ),
        Form::sh(
            "grep",
            "redis-cli -h 127.0.0.1 -p \"$REDIS_PORT\" ping | grep PONG",
        ),
        Form::sh(
            "grep-q-timeout",
            "timeout 3 redis-cli -h localhost -p ${REDIS_PORT} ping | grep -q PONG",
        ),
        Form::sh("exec-e", "exec redis-cli -e -p $REDIS_PORT ping").liveness(),
    ];
    let mut pod_secrets = Vec::new();
    if let Some(password) = password {
        let secret = Var::secret("REDIS_PASSWORD", "redis", "password");
        forms = vec![
            Form::new("argv-env", &["redis-cli", "-h", "127.0.0.1", "-p", "$(REDIS_PORT)", "ping"])
                .env(&[Var::secret("REDISCLI_AUTH", "redis", "password")]),
            Form::sh(
                "grep",
                "redis-cli -h 127.0.0.1 -p \"$REDIS_PORT\" -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep PONG",
            )
            .env(std::slice::from_ref(&secret)),
            Form::sh(
                "grep-q",
                "redis-cli --no-auth-warning -a $REDIS_PASSWORD -p ${REDIS_PORT} ping | grep -q PONG",
            )
            .env(std::slice::from_ref(&secret)),
            Form::new("argv-a", &["redis-cli", "-p", "$(REDIS_PORT)", "-a", "$(REDIS_PASSWORD)", "ping"])
                .env(std::slice::from_ref(&secret))
                .kept("the kubelet expands $(VAR) of a Secret to the empty string"),
            Form::new("argv-env-live", &["redis-cli", "-h", "127.0.0.1", "-p", "$(REDIS_PORT)", "ping"])
                .env(&[Var::secret("REDISCLI_AUTH", "redis", "password")])
                .liveness(),
        ];
        pod_secrets.push(password.to_string());
    }
    let forms = with_env(forms, &[port_var]);
    let mut pod = Pod::new("redis", forms);
    for p in pod_secrets {
        pod = pod.secret("redis", "password", &p);
    }
    pod.inject().compare(&format!("redis, {state}")).await;
}

/// Adds `vars` to every form's env, first.
fn with_env(forms: Vec<Form>, vars: &[Var]) -> Vec<Form> {
    forms
        .into_iter()
        .map(|f| {
            let mut env = vars.to_vec();
            env.extend(f.env.iter().cloned());
            Form { env, ..f }
        })
        .collect()
}

/// The exec probes of PostgreSQL manifests, against a server on `port`
/// with the roles of tests/it/db_postgres.rs (`trusty` by trust, `scram`
/// by password); `password`: the one the forms give `scram` (from a
/// Secret), or none. Called by tests/it/db_postgres.rs in each state.
pub async fn postgres(state: &str, port: u16, password: Option<&str>) {
    let mut forms = vec![
        Form::new(
            "isready-argv",
            &[
                "pg_isready",
                "-h",
                "127.0.0.1",
                "-p",
                "$(PG_PORT)",
                "-U",
                "trusty",
            ],
        ),
        Form::sh(
            "isready-sh",
            "pg_isready -h 127.0.0.1 -p \"$PG_PORT\" -U \"$POSTGRES_USER\" -d postgres",
        )
        .env(&[Var::plain("POSTGRES_USER", "scram")])
        .liveness(),
        Form::sh("isready-timeout", "timeout 3 pg_isready -h localhost -p $PGPORT")
            .env(&[Var::plain("PGPORT", port)]),
        Form::new(
            "psql-argv",
            &[
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                "$(PG_PORT)",
                "-U",
                "scram",
                "-d",
                "postgres",
                "-c",
                "SELECT 1",
            ],
        ),
        Form::sh(
            "psql-sh",
            "exec psql -w -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c 'SELECT 1'",
        )
        .env(&[
            Var::plain("PGPORT", port),
            Var::secret("POSTGRES_USER", "pg", "user"),
            Var::plain("POSTGRES_DB", "postgres"),
        ]),
    ];
    let mut pod_secrets = vec![("user", "scram".to_string())];
    if let Some(password) = password {
        forms = with_env(forms, &[Var::secret("PGPASSWORD", "pg", "password")]);
        pod_secrets.push(("password", password.to_string()));
    }
    let mut pod = Pod::new("postgres", with_env(forms, &[Var::plain("PG_PORT", port)]));
    for (key, value) in pod_secrets {
        pod = pod.secret("pg", key, &value);
    }
    pod.inject().compare(&format!("postgres, {state}")).await;
}

/// The exec probes of MariaDB and MySQL manifests, against a server on
/// `port`, as `user` with `password` (from a Secret), or without. Called
/// by tests/it/db_mysql.rs in each state.
pub async fn mysql(state: &str, port: u16, user: Option<&str>, password: Option<&str>) {
    let u = |flag: &str, var: &str| user.map(|_| format!(" {flag}{var}")).unwrap_or_default();
    let p = |flag: &str, var: &str| password.map(|_| format!(" {flag}{var}")).unwrap_or_default();
    let mut ping = vec!["mysqladmin", "ping", "-h", "127.0.0.1", "-P", "$(DB_PORT)"];
    if user.is_some() {
        ping.extend(["-u", "$(DB_USER)"]);
    }
    let mut forms = vec![
        Form::new("ping-argv", &ping),
        Form::sh(
            "status-sh",
            &format!(
                "mysqladmin status -h 127.0.0.1 -P \"$DB_PORT\"{}{}",
                u("-u ", "\"$DB_USER\""),
                p("-p", "\"$DB_PASSWORD\"")
            ),
        ),
        Form::sh(
            "query-sh",
            &format!(
                "mysql -h 127.0.0.1 -P $DB_PORT{}{} -e \"SELECT 1\"",
                u("-u", "$DB_USER"),
                p("-p", "$DB_PASSWORD")
            ),
        ),
        Form::sh(
            "ping-skip-ssl",
            &format!(
                "mysqladmin --skip-ssl -h 127.0.0.1 --port=${{DB_PORT}}{}{} ping",
                u("--user=", "${DB_USER}"),
                p("--password=", "${DB_PASSWORD}")
            ),
        )
        .liveness(),
        Form::sh(
            "ping-grep",
            &format!(
                "mysqladmin ping -h 127.0.0.1 -P $DB_PORT{}{} | grep 'mysqld is alive'",
                u("-u", "$DB_USER"),
                p("-p", "$DB_PASSWORD")
            ),
        ),
    ];
    if user.is_none() {
        // They log in as the app container's OS user, which the sidecar
        // cannot know; `mysqladmin ping` passes on any answer.
        for f in &mut forms[1..] {
            if ["status-sh", "query-sh", "ping-grep"].contains(&f.container.as_str()) {
                *f = f
                    .clone()
                    .kept("a login without a user is the container's OS user");
            }
        }
    }
    let mut vars = vec![Var::plain("DB_PORT", port)];
    if let Some(user) = user {
        vars.push(Var::plain("DB_USER", user));
    }
    if password.is_some() {
        vars.push(Var::secret("DB_PASSWORD", "db", "password"));
        // mysqladmin reads MYSQL_PWD: the argv form's password.
        forms[0].env.push(Var::secret("MYSQL_PWD", "db", "password"));
    }
    let mut pod = Pod::new("mariadb", with_env(forms, &vars));
    if let Some(password) = password {
        pod = pod.secret("db", "password", password);
    }
    pod.inject().compare(&format!("mysql, {state}")).await;
}

/// The `nc` one-liners of memcached manifests, against a memcached on
/// `port` (which keeps a connection open after answering: without `-q`
/// or `-w`, Debian's `nc` would wait for ever). Called by
/// tests/it/db_dialogue.rs in each state.
pub async fn memcached(state: &str, port: u16) {
    let forms = vec![
        Form::sh(
            "version-q",
            "echo version | nc -q1 127.0.0.1 $MEMCACHED_PORT | grep -q VERSION",
        ),
        Form::sh(
            "stats-w",
            "echo stats | nc -w 1 127.0.0.1 $(MEMCACHED_PORT) | grep uptime",
        )
        .liveness(),
    ];
    Pod::new(
        "memcached",
        with_env(forms, &[Var::plain("MEMCACHED_PORT", port)]),
    )
    .inject()
    .compare(&format!("memcached, {state}"))
    .await;
}

/// The ZooKeeper probes: `ruok` piped through `nc`, and compared with
/// `imok` in a test, against a server on `port`.
async fn zookeeper(state: &str, port: u16) {
    let forms = vec![
        // `printf ruok` and `echo -n ruok`: after `echo ruok`'s newline,
        // which the server never reads, it closes with a byte unread, the
        // kernel sends a reset, and under load nc can lose the `imok` it
        // had not read yet: that real probe fails now and then.
        Form::sh("ruok-grep", "printf ruok | nc 127.0.0.1 $ZK_PORT | grep imok"),
        Form::sh(
            "ruok-test",
            "[ \"$(echo -n ruok | nc 127.0.0.1 ${ZK_PORT})\" = \"imok\" ]",
        )
        .liveness(),
        Form::new(
            "ruok-bash",
            &[
                "bash",
                "-c",
                "printf ruok | nc localhost $(ZK_PORT) | grep -q imok",
            ],
        ),
        // The kubelet's expansion reads `$(echo ... $(ZK_PORT)` as one
        // unknown name and leaves it: the shell then runs a command named
        // ZK_PORT, and the probe always fails.
        Form::sh(
            "ruok-nested",
            "[ \"$(echo ruok | nc 127.0.0.1 $(ZK_PORT))\" = imok ]",
        )
        .kept("$(...) inside the kubelet's $(VAR)"),
    ];
    Pod::new("zookeeper", with_env(forms, &[Var::plain("ZK_PORT", port)]))
        .inject()
        .compare(&format!("zookeeper, {state}"))
        .await;
}

/// The runs a check has made, as `/metrics` counts them.
fn runs(text: &str, check: &str) -> f64 {
    let prefix = format!("healthproxy_check_runs_total{{check=\"{check}\",");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `argv` as the kubelet runs an exec probe: exec'ed, no shell, the
/// working directory `/`, nothing on stdin, killed (its process group) at
/// `timeoutSeconds`. Its exit code (`None`: killed) and what it wrote.
pub async fn run_as_kubelet(argv: &[String], env: &[(String, String)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (Some(127), format!("{}: {e}", argv[0])),
    };
    let pid = child.id().expect("running") as i32;
    match tokio::time::timeout(Duration::from_secs(TIMEOUT_SECONDS), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
        Err(_) => {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            (None, format!("killed at timeoutSeconds ({TIMEOUT_SECONDS}s)"))
        }
    }
}

/// The objects of a YAML stream.
fn objects(text: &str) -> Vec<Json> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            out.push(serde_json::to_value(&v).unwrap());
        }
    }
    out
}

/// Adds `line` to target/tmp/exec-convert-e2e.txt, the record of this
/// binary's run: each state's verdicts and time, for the CI budget.
fn record(line: &str) {
    use std::sync::Mutex;
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut lines = LINES.lock().unwrap();
    lines.push(line.to_string());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::write(dir.join("exec-convert-e2e.txt"), lines.join("\n") + "\n");
}

#[test]
fn the_kubelets_expansion_is_followed() {
    let env = |n: &str| match n {
        "PORT" => Some("5432".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    for (input, expanded) in [
        ("-p$(PORT)", "-p5432"),
        ("$(PORT)$(PORT)", "54325432"),
        ("$(UNSET)", "$(UNSET)"),
        ("$(EMPTY)x", "x"),
        ("$$(PORT)", "$(PORT)"),
        ("$PORT", "$PORT"),
        ("${PORT}", "${PORT}"),
        ("a$", "a$"),
        ("$(PORT", "$(PORT"),
        ("\"$PGUSER\"", "\"$PGUSER\""),
        ("$$", "$"),
    ] {
        assert_eq!(kubelet_expand(input, &env), expanded, "{input}");
    }
    let f = Form::new("c", &["psql", "-p", "$(PORT)", "-W$(PASS)"])
        .env(&[Var::plain("PORT", 5432), Var::secret("PASS", "s", "k")]);
    assert_eq!(f.kubelet_argv(), ["psql", "-p", "5432", "-W"]);
}

// === The servers no other test needs, and the states of each ===

/// PostgreSQL's states that leave the shared server as it is (the others
/// are reached by tests/it/db_postgres.rs's walk, which calls
/// [`postgres`] in each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_probes_give_the_tools_verdicts_up_and_not_running() {
    let server = crate::db_postgres::shared();
    let (_hold, refused) = refusing_port();
    tokio::join!(
        postgres("up", server.port, Some("scram-secret")),
        postgres("up, a wrong password", server.port, Some("wrong")),
        postgres("up, no password given", server.port, None),
        postgres("not running", refused, Some("scram-secret")),
    );
}

/// A ZooKeeper server (Debian's zookeeper, 3.8) from a temporary
/// directory, killed on drop.
struct ZooKeeper {
    server: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ZooKeeper {
    /// Starts a standalone server whose four-letter words are
    /// `whitelist`, taking at most `max_connections` from one address,
    /// and returns once it answers a four-letter word.
    async fn start(whitelist: &str, max_connections: u32) -> ZooKeeper {
        let dir = tempfile::Builder::new().prefix("hp-zk-").tempdir().unwrap();
        for _ in 0..5 {
            let port = crate::support::free_port();
            let config = dir.path().join("zoo.cfg");
            std::fs::write(
                &config,
                format!(
                    "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                     admin.enableServer=false\nmaxClientCnxns={max_connections}\n\
                     4lw.commands.whitelist={whitelist}\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut server = Process(
                std::process::Command::new(tool("java"))
                    .args(["-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp"])
                    .arg(ZOOKEEPER_JAR)
                    .arg(format!("-Dzookeeper.log.dir={}", dir.path().display()))
                    .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("java runs"),
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if server.0.try_wait().unwrap().is_some() {
                    break; // the port was taken: another one
                }
                if !four_letter_word(port, "ruok").await.is_empty() {
                    return ZooKeeper {
                        server,
                        port,
                        _dir: dir,
                    };
                }
                assert!(Instant::now() < deadline, "ZooKeeper did not answer within 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("ZooKeeper could not bind a port in 5 tries");
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.server.0.id() as i32), signal).unwrap();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.server.0.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// Debian's ZooKeeper: its jar names the others in its manifest.
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// What the server answers `word` with (empty: nothing, or no server),
/// within a second.
async fn four_letter_word(port: u16, word: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(word.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ruok_probes_give_the_one_liners_verdict_in_every_state() {
    assert!(
        Path::new(ZOOKEEPER_JAR).is_file(),
        "ZooKeeper is not installed: .ci/install.d/databases.sh installs it"
    );
    let (_hold, refused) = refusing_port();
    zookeeper("not running", refused).await;

    let server = ZooKeeper::start("ruok", 8).await;
    let port = server.port;
    assert_eq!(four_letter_word(port, "ruok").await, "imok");
    zookeeper("up", port).await;

    // Connections exhausted: maxClientCnxns held by idle clients, and the
    // next one closed at once.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    eventually(
        Duration::from_secs(10),
        "a ninth connection closed unanswered",
        || async { four_letter_word(port, "ruok").await.is_empty() },
    )
    .await;
    zookeeper("connections exhausted", port).await;
    drop(held);
    eventually(Duration::from_secs(10), "imok again", || async {
        four_letter_word(port, "ruok").await == "imok"
    })
    .await;

    // Frozen: the kernel accepts, nothing answers.
    server.signal(nix::sys::signal::Signal::SIGSTOP);
    zookeeper("frozen", port).await;
    server.signal(nix::sys::signal::Signal::SIGCONT);
    zookeeper("thawed", port).await;
    drop(server);

    // `ruok` not in 4lw.commands.whitelist (3.5.3+): the server says so
    // and closes; nc exits 0, the comparison with imok fails.
    let server = ZooKeeper::start("srvr", 8).await;
    assert_eq!(
        four_letter_word(server.port, "ruok").await,
        "ruok is not executed because it is not in the whitelist.\n"
    );
    zookeeper("ruok not in the whitelist", server.port).await;
}

/// The HTTP and TCP exec probes against the test app, whose `/healthz`
/// answers what it is set to.
async fn http(state: &str, port: u16) {
    let forms = vec![
        Form::new("curl-f", &["curl", "-f", "http://127.0.0.1:$(APP_PORT)/healthz"]),
        Form::new(
            "curl-any",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "http://localhost:$(APP_PORT)/healthz",
            ],
        ),
        Form::sh(
            "curl-grep",
            "curl -fsS http://127.0.0.1:$APP_PORT/healthz | grep -q health",
        ),
        Form::new(
            "wget",
            &[
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:$(APP_PORT)/healthz",
            ],
        ),
        Form::sh(
            "wget-spider",
            "wget --spider -q http://127.0.0.1:${APP_PORT}/healthz",
        )
        .kept("GNU wget's --spider asks with HEAD, BusyBox's with GET"),
        Form::new("nc-z", &["nc", "-z", "127.0.0.1", "$(APP_PORT)"]).liveness(),
    ];
    Pod::new("web", with_env(forms, &[Var::plain("APP_PORT", port)]))
        .inject()
        .compare(&format!("http, {state}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_wget_and_nc_probes_give_the_tools_verdicts() {
    let app = crate::support::App::start().await;
    let port = app.addr.port();
    http("200", port).await;
    app.set_status(500);
    http("500", port).await;
    app.set_status(404);
    http("404", port).await;
    app.stop().await;
    http("not running", port).await;
}

/// `pgrep -f` probes in a pod that shares its process namespace.
fn pgrep_pod(marker: &str, share: bool) -> Pod {
    let mut forms = vec![
        Form::new("pgrep-argv", &["pgrep", "-f", marker]),
        Form::sh("pgrep-exec", &format!("exec pgrep -f '{marker}'")).liveness(),
        // dash runs pgrep as its child: pgrep finds the shell, whose
        // command line holds the pattern; the probe always passes.
        Form::sh("pgrep-sh", &format!("pgrep -f '{marker}'")).kept("the shell's own command line matches"),
    ];
    if !share {
        forms = forms
            .into_iter()
            .map(|f| f.kept("the pod does not share its process namespace"))
            .collect();
    }
    let mut pod = Pod::new("worker", forms);
    pod.share_process_namespace = share;
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgrep_probes_give_pgreps_verdict_where_the_pod_shares_its_processes() {
    let marker = format!("hp-e2e-marker-{}", crate::support::free_port());
    pgrep_pod(&marker, false).inject();
    let pod = pgrep_pod(&marker, true).inject();
    pod.compare("no such process").await;
    let mut child = crate::support::marked_sleeper(&marker).await;
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    pod.compare("running").await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    pod.compare("stopped").await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.0.wait().unwrap();
    pod.compare("gone").await;
}

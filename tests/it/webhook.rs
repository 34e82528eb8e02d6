//! `healthproxy webhook`: the real binary over real TLS, sent the
//! AdmissionReview documents the API server sends for pods of every
//! workload kind. The JSONPatch it answers, applied with the json-patch
//! crate, must give what `healthproxy inject` gives for the same pod
//! template, with the ConfigMap and Secret carried in the pod's
//! annotations instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{Process, binary, collect_logs, eventually, metric, request};

/// A CA and serving key pairs it signs, as cert-manager's would be.
pub(crate) struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "healthproxy-webhook-ca");
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A serving certificate for 127.0.0.1 and the Service's DNS name:
    /// (cert PEM, key PEM, cert DER).
    fn serving(&self) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "healthproxy-webhook.healthproxy-system.svc".to_string(),
        ])
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A serving certificate as [`Ca::serving`] that expired on 1 January
    /// 2021: (cert PEM, key PEM).
    pub(crate) fn serving_expired(&self) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every connection a full handshake, as the API server's client
        // makes (Go's has no session cache unless given one): a resumed
        // session reports the certificate of the session it resumes.
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// A running `healthproxy webhook`, killed on drop.
pub(crate) struct Webhook {
    pub(crate) process: Process,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) admin: std::net::SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) client: tokio_rustls::TlsConnector,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    pub(crate) fn start(ca: &Ca, extra: &[&str]) -> Webhook {
        Webhook::start_with(ca, extra, &[])
    }

    /// Started through `wrapper` (a command that execs its arguments, such
    /// as `prlimit --nofile=256: --`), when not empty.
    pub(crate) fn start_with(ca: &Ca, extra: &[&str], wrapper: &[&str]) -> Webhook {
        let (cert, key, _) = ca.serving();
        Webhook::start_pair(ca, (&cert, &key), extra, wrapper)
    }

    /// Started with the key pair `(cert, key)` (PEM), through `wrapper`.
    pub(crate) fn start_pair(
        ca: &Ca,
        (cert, key): (&str, &str),
        extra: &[&str],
        wrapper: &[&str],
    ) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        let mut child = command
            .args([
                "webhook",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--tls-cert",
            ])
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (logs, ready) = collect_logs(&mut child, "healthproxy webhook serving");
        let address = |k: &str| ready[k].as_str().unwrap().parse().unwrap();
        let (addr, admin) = (address("listen"), address("admin"));
        let process = Process(child);
        Webhook {
            process,
            addr,
            admin,
            dir,
            client: ca.client(),
            logs,
        }
    }

    /// One request on a new TLS connection: (status, body, the server's
    /// certificate).
    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self
            .client
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let presented: CertificateDer<'_> = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("http: {e}"))?;
        tokio::spawn(conn);
        let request = hyper::Request::post(path)
            .header("host", "healthproxy-webhook.healthproxy-system.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok((status, body, presented.to_vec()))
    }

    /// The status of a POST of `length` bytes, of which only the headers
    /// are sent.
    async fn status_of_headers_only(&self, path: &str, length: usize) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::IpAddress(self.addr.ip().into());
        let mut tls = self.client.connect(name, tcp).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: healthproxy-webhook\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 12];
        tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        answer.strip_prefix("HTTP/1.1 ").unwrap().parse().unwrap()
    }

    /// Sends `review` to `/mutate`; returns the AdmissionResponse.
    pub(crate) async fn admit(&self, review: &Value) -> Value {
        let (status, body, _) = self
            .post("/mutate", serde_json::to_vec(review).unwrap())
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = answer["response"].clone();
        assert_eq!(response["uid"], review["request"]["uid"], "the uid is echoed");
        assert_eq!(response["allowed"], true, "pod creation is never blocked");
        response
    }

    async fn metrics(&self) -> String {
        request(self.admin, "GET", "/metrics", &[]).await.body
    }
}

/// The patch of an AdmissionResponse: base64 text, as the AdmissionReview
/// API has it (Go's encoding/json reads a `[]byte` so).
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let text = response.get("patch")?.as_str().expect("the patch is base64 text");
    assert_eq!(response["patchType"], "JSONPatch");
    Some(serde_json::from_slice(&base64_decode(text)).unwrap())
}

/// RFC 4648 base64 with padding, strictly: anything else panics.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(text.len() % 4, 0, "padded base64");
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|b| **b == b'=').count();
        let n = chunk.iter().take(4 - pad).enumerate().fold(0u32, |n, (i, b)| {
            let v = ALPHABET.iter().position(|a| a == b).expect("a base64 character") as u32;
            n | v << (18 - 6 * i)
        });
        out.extend(n.to_be_bytes()[1..4 - pad].iter());
    }
    out
}

/// The AdmissionReview the API server sends for creating `pod`.
pub(crate) fn review(pod: &Value, user: &str) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": format!("7c6a3f1e-0b5d-4c1a-9e2f-{:012x}", rand_suffix()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            // Empty for a generated name: the API server names the pod
            // after admission.
            "name": pod["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": user,
                "uid": "5d4b1c2a-3e4f-4a5b-8c7d-9e0f1a2b3c4d",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    })
}

fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(1);
    (std::process::id() as u64) << 20 | N.fetch_add(1, Ordering::Relaxed) as u64
}

/// The app container as the API server has defaulted it: probes with
/// every threshold, ports with their protocol, the service account's
/// token mounted.
fn app_container() -> Value {
    json!({
        "name": "web",
        "image": "registry.example/shop/web:1.4.2",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
        },
        "readinessProbe": {
            "tcpSocket": {"port": "http"},
            "initialDelaySeconds": 5, "timeoutSeconds": 2, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

/// A pod as the API server sends it to a mutating webhook, created by
/// `owner` (kind, name) or, without one, by a user.
pub(crate) fn api_pod(owner: Option<(&str, &str)>) -> Value {
    let mut meta = json!({
        "namespace": "shop",
        "creationTimestamp": null,
        "labels": {"app.kubernetes.io/name": "web"},
    });
    let mut spec = json!({
        "volumes": [{
            "name": "kube-api-access-x7k2p",
            "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ], "defaultMode": 420}
        }],
        "containers": [app_container()],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
    });
    match owner {
        None => {
            meta["name"] = "debug-shell".into();
            meta["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n"});
            spec["containers"][0]["livenessProbe"] = json!({
                "grpc": {"port": 9090, "service": null},
                "initialDelaySeconds": 3, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3
            });
        }
        Some((kind, name)) => {
            meta["ownerReferences"] = json!([{
                "apiVersion": api_version(kind), "kind": kind, "name": name,
                "uid": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "controller": true, "blockOwnerDeletion": true
            }]);
            if kind == "StatefulSet" {
                meta["name"] = format!("{name}-0").into();
            } else {
                meta["generateName"] = format!("{name}-").into();
            }
            let labels = &mut meta["labels"];
            match kind {
                "ReplicaSet" => labels["pod-template-hash"] = "7d9f8b6c5".into(),
                "StatefulSet" => {
                    labels["controller-revision-hash"] = format!("{name}-5b8c9d7f6").into();
                    labels["statefulset.kubernetes.io/pod-name"] = format!("{name}-0").into();
                    labels["apps.kubernetes.io/pod-index"] = "0".into();
                    spec["hostname"] = format!("{name}-0").into();
                    spec["subdomain"] = name.into();
                    spec["volumes"].as_array_mut().unwrap().insert(
                        0,
                        json!({"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{name}-0")}}),
                    );
                    spec["containers"][0]["volumeMounts"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "data", "mountPath": "/var/lib/db"}));
                }
                "DaemonSet" => {
                    labels["controller-revision-hash"] = "6c7d8e9f0a".into();
                    labels["pod-template-generation"] = "1".into();
                    spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
                    ]}}});
                    spec["tolerations"] = json!([
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
                        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
                    ]);
                }
                "Job" => {
                    // A CronJob's pods are its Jobs'.
                    labels["batch.kubernetes.io/job-name"] = name.into();
                    labels["job-name"] = name.into();
                    labels["batch.kubernetes.io/controller-uid"] =
                        "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6".into();
                    spec["restartPolicy"] = "Never".into();
                    spec["containers"][0]["startupProbe"] = json!({
                        "httpGet": {"path": "/started", "port": 8080, "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 2, "successThreshold": 1, "failureThreshold": 30
                    });
                }
                _ => {}
            }
        }
    }
    json!({"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": {}})
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Job" => "batch/v1",
        "ReplicationController" => "v1",
        _ => "apps/v1",
    }
}

/// Every kind that creates pods, with the owner a pod of it names.
const OWNERS: [Option<(&str, &str)>; 6] = [
    None,
    Some(("ReplicaSet", "web-7d9f8b6c5")),
    Some(("StatefulSet", "db")),
    Some(("DaemonSet", "agent")),
    Some(("Job", "backup-29411520")),
    Some(("ReplicationController", "legacy")),
];

/// What `healthproxy inject` (the binary) makes of `pod`'s template in its
/// owner (or of the pod itself), carried the webhook's way: the pod with
/// the injected metadata and spec, the ConfigMap's config and the
/// Secret's token in annotations, their volumes from the downward API.
/// The token is random: `token` stands for the one inject drew.
fn injected_by_cli(pod: &Value, owner: Option<(&str, &str)>, args: &[&str], token: Option<&str>) -> Value {
    let (mut expected, config, cli_token) = cli_inject(pod, owner, args);
    if let (Some(cli), Some(ours)) = (&cli_token, token) {
        let text = serde_json::to_string(&expected)
            .unwrap()
            .replace(cli.as_str(), ours);
        expected = serde_json::from_str(&text).unwrap();
    }
    let annotations = &mut expected["metadata"]["annotations"];
    annotations["healthproxy.io/config"] = config.into();
    if let Some(token) = token {
        annotations["healthproxy.io/token"] = token.into();
    }
    for volume in expected["spec"]["volumes"].as_array_mut().unwrap() {
        if volume
            .get("configMap")
            .is_some_and(|c| c["name"].as_str().unwrap().contains("-healthproxy"))
        {
            *volume = json!({"name": volume["name"], "downwardAPI": {"items": [
                {"path": "config.toml", "fieldRef": {"fieldPath": "metadata.annotations['healthproxy.io/config']"}}
            ]}});
        } else if volume
            .get("secret")
            .is_some_and(|s| s["secretName"].as_str().unwrap().ends_with("-healthproxy-token"))
        {
            *volume = json!({"name": volume["name"], "downwardAPI": {"items": [
                {"path": "token", "fieldRef": {"fieldPath": "metadata.annotations['healthproxy.io/token']"}}
            ]}});
        }
    }
    expected
}

/// `healthproxy inject` on `pod`'s template in its owner (or on the pod):
/// the pod with the injected metadata and spec, the ConfigMap's config,
/// the Secret's token.
fn cli_inject(pod: &Value, owner: Option<(&str, &str)>, args: &[&str]) -> (Value, String, Option<String>) {
    let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
    let document = match owner {
        None => pod.clone(),
        Some((kind, name)) => {
            json!({
                "apiVersion": api_version(kind), "kind": kind,
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"template": template},
            })
        }
    };
    let out = crate::support::piped(
        Command::new(binary()).arg("inject").args(args),
        &serde_json::to_string(&document).unwrap(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut workload = None;
    let mut config = None;
    let mut cli_token = None;
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde_yaml_ng::with::singleton_map_recursive::deserialize(doc).unwrap();
        match doc["kind"].as_str().unwrap() {
            "ConfigMap" => config = Some(doc["data"]["config.toml"].as_str().unwrap().to_string()),
            "Secret" => cli_token = Some(doc["stringData"]["token"].as_str().unwrap().to_string()),
            _ => workload = Some(doc),
        }
    }
    let workload = workload.unwrap();
    let template = if owner.is_some() {
        &workload["spec"]["template"]
    } else {
        &workload
    };
    let mut expected = pod.clone();
    expected["metadata"] = template["metadata"].clone();
    expected["spec"] = template["spec"].clone();
    (expected, config.unwrap(), cli_token)
}

/// Applies the answer's patch to `pod`.
fn patched(pod: &Value, response: &Value) -> Value {
    let patch = patch_of(response).unwrap_or_else(|| panic!("no patch: {response}"));
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

#[tokio::test]
async fn the_patch_gives_what_inject_gives_for_pods_of_every_workload_kind() {
    let ca = Ca::new();
    for (mode, args) in [
        ("native", &[][..]),
        ("classic", &["--sidecar", "classic", "--port", "9901"][..]),
    ] {
        let webhook = Webhook::start(&ca, args);
        for owner in OWNERS {
            let pod = api_pod(owner);
            let response = webhook
                .admit(&review(
                    &pod,
                    "system:serviceaccount:kube-system:replicaset-controller",
                ))
                .await;
            let got = patched(&pod, &response);
            let token = got["metadata"]["annotations"]["healthproxy.io/token"].as_str();
            let expected = injected_by_cli(&pod, owner, args, token);
            assert_eq!(
                got,
                expected,
                "{mode} sidecar, pod of {owner:?}:\n got: {}\nwant: {}",
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&expected).unwrap()
            );
            // The sidecar reads its config and token where inject puts
            // them, and the config is one the sidecar accepts.
            let config = got["metadata"]["annotations"]["healthproxy.io/config"]
                .as_str()
                .unwrap();
            healthproxy::config::Config::from_toml_str(config, "config", &|_: &str| None)
                .unwrap_or_else(|e| panic!("{e}"));
            if owner.is_some_and(|(kind, _)| kind == "Job") && mode == "classic" {
                assert!(config.contains("exit_when_app_exits = true"), "{config}");
            }
            // Called again (reinvocationPolicy: IfNeeded), it leaves the
            // injected pod alone.
            let again = webhook
                .admit(&review(
                    &got,
                    "system:serviceaccount:kube-system:replicaset-controller",
                ))
                .await;
            assert!(again.get("patch").is_none(), "{again}");
        }
        let metrics = webhook.metrics().await;
        assert_eq!(
            metric(
                &metrics,
                "healthproxy_webhook_admissions_total{result=\"injected\"}"
            ),
            Some(OWNERS.len() as f64),
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "healthproxy_webhook_admissions_total{result=\"already_injected\"}"
            ),
            Some(OWNERS.len() as f64),
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "healthproxy_webhook_admission_duration_seconds_count{result=\"injected\"}"
            ),
            Some(OWNERS.len() as f64),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn opt_in_opt_out_and_already_injected() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let user = "system:serviceaccount:kube-system:replicaset-controller";
    let owner = Some(("ReplicaSet", "web-7d9f8b6c5"));

    let mut opted_in = api_pod(owner);
    opted_in["metadata"]["labels"]["healthproxy.io/inject"] = "enabled".into();
    assert!(
        webhook
            .admit(&review(&opted_in, user))
            .await
            .get("patch")
            .is_some()
    );

    for (field, value) in [
        ("labels", "disabled"),
        ("annotations", "disabled"),
        ("annotations", "false"),
    ] {
        let mut out = api_pod(owner);
        out["metadata"][field]["healthproxy.io/inject"] = value.into();
        let response = webhook.admit(&review(&out, user)).await;
        assert!(response.get("patch").is_none(), "{field} {value}: {response}");
    }

    // A pod from a Deployment that `healthproxy inject` rendered: its
    // template already carries the sidecar.
    let pod = api_pod(owner);
    let (already, _, _) = cli_inject(&pod, owner, &[]);
    let response = webhook.admit(&review(&already, user)).await;
    assert!(response.get("patch").is_none(), "{response}");

    // Not a pod's creation: an update, another kind, a subresource.
    let mut update = review(&pod, user);
    update["request"]["operation"] = "UPDATE".into();
    update["request"]["oldObject"] = pod.clone();
    assert!(webhook.admit(&update).await.get("patch").is_none());
    let mut binding = review(
        &json!({"kind": "Binding", "apiVersion": "v1", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "node-a"}}),
        user,
    );
    binding["request"]["subResource"] = "binding".into();
    assert!(webhook.admit(&binding).await.get("patch").is_none());

    let metrics = webhook.metrics().await;
    for (result, n) in [
        ("injected", 1.0),
        ("opted_out", 3.0),
        ("already_injected", 1.0),
        ("not_applicable", 2.0),
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!("healthproxy_webhook_admissions_total{{result=\"{result}\"}}")
            ),
            Some(n),
            "{result}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_pod_inject_refuses_is_admitted_unchanged_with_a_warning_saying_why() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let user = "kubernetes-admin";
    // The app listens on the sidecar's port.
    let mut clash = api_pod(None);
    clash["spec"]["containers"][0]["ports"] = json!([{"containerPort": 9775, "protocol": "TCP"}]);
    let response = webhook.admit(&review(&clash, user)).await;
    assert!(response.get("patch").is_none(), "{response}");
    let warnings = response["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| {
            let w = w.as_str().unwrap();
            w.starts_with("healthproxy: not injected: Pod shop/debug-shell: spec.containers[web].ports[0].containerPort: 9775")
        }),
        "{warnings:?}"
    );
    // A probe inject cannot read.
    let mut bad = api_pod(Some(("ReplicaSet", "web-7d9f8b6c5")));
    bad["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = "no-such-port".into();
    let response = webhook.admit(&review(&bad, user)).await;
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("livenessProbe"),
        "{response}"
    );
    // Nothing to take over: unchanged, and said so.
    let mut none = api_pod(None);
    let c = &mut none["spec"]["containers"][0];
    c.as_object_mut().unwrap().remove("livenessProbe");
    c.as_object_mut().unwrap().remove("readinessProbe");
    let response = webhook.admit(&review(&none, user)).await;
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("left unchanged"),
        "{response}"
    );
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "healthproxy_webhook_admissions_total{result=\"refused\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "healthproxy_webhook_admissions_total{result=\"no_probes\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_a_clear_4xx_and_the_webhook_keeps_serving() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let cases: [(&[u8], &str); 4] = [
        (b"not json", "not an AdmissionReview: expected ident"),
        (
            b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}",
            "an AdmissionReview without a request",
        ),
        (
            b"{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":1}}",
            "not an AdmissionReview: invalid type: integer `1`, expected a string",
        ),
        (b"", "not an AdmissionReview: EOF while parsing"),
    ];
    for (body, message) in cases {
        let (status, answer, _) = webhook.post("/mutate", body.to_vec()).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer.starts_with(message),
            "{answer:?} should start with {message:?}"
        );
    }
    // Bigger than any object the API server stores, with room to spare:
    // refused on its Content-Length, before a byte of it is read.
    assert_eq!(webhook.status_of_headers_only("/mutate", 5 << 20).await, 413);
    assert_eq!(
        webhook.status_of_headers_only("/mutate", (4 << 20) + 1).await,
        413
    );
    let (status, _, _) = webhook.post("/other", b"{}".to_vec()).await.unwrap();
    assert_eq!(status, 404);
    // Still serving.
    let pod = api_pod(None);
    assert!(
        webhook
            .admit(&review(&pod, "kubernetes-admin"))
            .await
            .get("patch")
            .is_some()
    );
    let metrics = webhook.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "healthproxy_webhook_admissions_total{result=\"bad_request\"}"
        ),
        Some(4.0)
    );
    assert_eq!(request(webhook.admin, "GET", "/healthz", &[]).await.status, 200);
}

/// Writes `contents` to `path` the way the kubelet updates a Secret's
/// volume: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let new = PathBuf::from(format!("{}.new", path.display()));
    std::fs::write(&new, contents).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart_or_a_failed_handshake() {
    let ca = Ca::new();
    let webhook = Arc::new(Webhook::start(&ca, &[]));
    let first = webhook.post("/mutate", b"{}".to_vec()).await.unwrap().2;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (webhook, stop, served) = (webhook.clone(), stop.clone(), served.clone());
        tokio::spawn(async move {
            let pod = api_pod(None);
            while !stop.load(Ordering::Relaxed) {
                let body = serde_json::to_vec(&review(&pod, "kubernetes-admin")).unwrap();
                let (status, _, cert) = webhook
                    .post("/mutate", body)
                    .await
                    .expect("no failed handshake or request");
                assert_eq!(status, 200);
                served.lock().unwrap().push(cert);
            }
        })
    };
    let cert_path = webhook.dir.path().join("tls.crt");
    let key_path = webhook.dir.path().join("tls.key");
    // A half-done rotation first: the new certificate beside the old key.
    // The pair does not match and is not served.
    let (cert, key, second) = ca.serving();
    replace(&cert_path, &cert);
    eventually(
        Duration::from_secs(10),
        "the mismatched pair is reported",
        || async {
            webhook
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("does not match"))
        },
    )
    .await;
    replace(&key_path, &key);
    eventually(
        Duration::from_secs(10),
        "the new certificate is served",
        || async { served.lock().unwrap().last() == Some(&second) },
    )
    .await;
    // A second rotation, written in place.
    let (cert, key, third) = ca.serving();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    eventually(
        Duration::from_secs(10),
        "the third certificate is served",
        || async { served.lock().unwrap().last() == Some(&third) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    client.await.expect("every request of the client succeeded");
    let served = served.lock().unwrap();
    assert!(served.iter().all(|c| [&first, &second, &third].contains(&c)));
    let firsts = served.iter().position(|c| *c != first).unwrap();
    assert!(
        firsts > 0 && served[firsts..].iter().all(|c| *c != first),
        "never back to the old one"
    );
}

#[tokio::test]
async fn a_key_pair_that_does_not_load_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = Command::new(binary())
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
        .arg(dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&cert.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn what_is_worth_saying_about_an_original_probe_is_an_admission_warning() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let mut pod = api_pod(Some(("ReplicaSet", "web-7d9f8b6c5")));
    let probe = &mut pod["spec"]["containers"][0]["readinessProbe"];
    probe["periodSeconds"] = 10.into();
    probe["timeoutSeconds"] = 30.into();
    let response = webhook.admit(&review(&pod, "kubernetes-admin")).await;
    assert!(response.get("patch").is_some(), "injected: {response}");
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let said = warnings
        .iter()
        .filter(|w| {
            w.contains("containers[web].readinessProbe: timeout (30s) is not shorter than period (10s)")
        })
        .count();
    assert_eq!(said, 1, "{warnings:?}");
}

// === Issue 27: work linear in the pod, an answer bounded by the patch ===

/// A pod of `n` small containers, each with `probes` probes (readiness,
/// then liveness), as in the 2,000-container pod of 260 KB.
fn pod_of(n: usize, probes: usize) -> Value {
    let containers: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = json!({"name": format!("c{i}"), "image": "registry.example/app:1", "ports": [{"containerPort": 8080}]});
            c["readinessProbe"] = json!({"tcpSocket": {"port": 8080}});
            if probes > 1 {
                c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}});
            }
            c
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("big-{n}"), "namespace": "shop"},
        "spec": {"containers": containers},
    })
}

/// The CPU time of this thread (user and system), in seconds.
fn thread_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}

/// CPU seconds per container of `work` on a pod of `n` containers: the
/// least of three runs.
fn cpu_per_container(n: usize, work: impl Fn()) -> f64 {
    (0..3)
        .map(|_| {
            let start = thread_cpu();
            work();
            (thread_cpu() - start) / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn the_cpu_per_container_stays_flat_as_the_pod_grows() {
    // The issue: 1k/2k/4k/8k containers took 0.19/0.43/1.6/7.8 s, a cost
    // per container 5 times higher at 8k than at 1k.
    let options = healthproxy::inject::Options::default();
    let yaml = |n| serde_json::to_string(&pod_of(n, 2)).unwrap();
    let (small, large) = (yaml(1000), yaml(8000));
    let inject = |text: &str| {
        healthproxy::inject::inject(text, &options).unwrap();
    };
    let per_small = cpu_per_container(1000, || inject(&small));
    let per_large = cpu_per_container(8000, || inject(&large));
    let ratio = per_large / per_small;
    eprintln!("inject: {per_small:.2e} s per container at 1,000, {per_large:.2e} at 8,000: x{ratio:.2}");
    assert!(
        ratio < 2.0,
        "inject: the cost per container grew x{ratio:.2} from 1,000 to 8,000 containers"
    );

    // uninject, which inject does first on an injected stream.
    let (small, large) = (
        healthproxy::inject::inject(&small, &options).unwrap().text,
        healthproxy::inject::inject(&large, &options).unwrap().text,
    );
    let uninject = |text: &str| {
        healthproxy::inject::uninject(text).unwrap();
    };
    let per_small = cpu_per_container(1000, || uninject(&small));
    let per_large = cpu_per_container(8000, || uninject(&large));
    let ratio = per_large / per_small;
    eprintln!("uninject: {per_small:.2e} s per container at 1,000, {per_large:.2e} at 8,000: x{ratio:.2}");
    assert!(
        ratio < 2.0,
        "uninject: the cost per container grew x{ratio:.2} from 1,000 to 8,000 containers"
    );

    // The webhook, up to the most containers it injects.
    let body = |n| serde_json::to_vec(&review(&pod_of(n, 1), "kubernetes-admin")).unwrap();
    let (small, large) = (body(32), body(healthproxy::webhook::MAX_CONTAINERS));
    let admit = |body: &[u8]| {
        let (answer, outcome) = healthproxy::webhook::review(body, &options).unwrap();
        assert_eq!(outcome, healthproxy::webhook::Outcome::Injected, "{answer}");
    };
    let per_small = cpu_per_container(32, || admit(&small));
    let per_large = cpu_per_container(healthproxy::webhook::MAX_CONTAINERS, || admit(&large));
    let ratio = per_large / per_small;
    eprintln!("webhook: {per_small:.2e} s per container at 32, {per_large:.2e} at 256: x{ratio:.2}");
    assert!(
        ratio < 2.0,
        "webhook: the cost per container grew x{ratio:.2} from 32 to 256 containers"
    );
}

/// The webhook's peak resident memory, from /proc (bytes).
fn peak_rss(webhook: &Webhook) -> u64 {
    crate::support::proc_status(webhook.process.0.id(), "VmHWM") << 10
}

#[tokio::test]
async fn the_answer_carries_the_patch_in_base64_and_grows_with_it() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    for n in [1, 16, 128] {
        let pod = pod_of(n, 1);
        let (status, body, _) = webhook
            .post(
                "/mutate",
                serde_json::to_vec(&review(&pod, "kubernetes-admin")).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let response = &answer["response"];
        let text = response["patch"]
            .as_str()
            .expect("base64 text, as the API has it");
        let patch = base64_decode(text);
        // The patch in base64 (4/3) and a few hundred bytes: no more.
        assert!(
            body.len() <= patch.len() * 4 / 3 + 512,
            "{n} containers: an answer of {} bytes for a patch of {}",
            body.len(),
            patch.len()
        );
        let got = patched(&pod, response);
        assert_eq!(got["spec"]["initContainers"][0]["name"], "healthproxy");
        assert_eq!(got["spec"]["containers"].as_array().unwrap().len(), n);
    }
    // Classic: the sidecar put first is one add, not a change of every
    // container after it.
    let classic = Webhook::start(&ca, &["--sidecar", "classic"]);
    let pod = pod_of(64, 1);
    let response = classic.admit(&review(&pod, "kubernetes-admin")).await;
    let patch = patch_of(&response).unwrap();
    let ops = serde_json::to_value(&patch).unwrap();
    let whole_containers: Vec<&Value> = ops
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| {
            let path = op["path"].as_str().unwrap();
            path.strip_prefix("/spec/containers/")
                .is_some_and(|i| i.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    assert_eq!(whole_containers.len(), 1, "one container written whole");
    assert_eq!(whole_containers[0]["op"], "add");
    assert_eq!(whole_containers[0]["path"], "/spec/containers/0");
    let got = patched(&pod, &response);
    assert_eq!(got["spec"]["containers"][0]["name"], "healthproxy");
    assert_eq!(got["spec"]["containers"][1]["name"], "c0");
}

#[tokio::test]
async fn a_pod_past_the_stated_size_is_admitted_unchanged_with_a_warning() {
    let ca = Ca::new();
    let webhook = Webhook::start(&ca, &[]);
    let cases = [
        // The pod: 2,000 containers, 260 KB, OOM-killed the webhook
        // under its 128 Mi limit.
        (
            pod_of(2000, 1),
            "the pod has 2000 containers, more than the 256 the webhook injects",
        ),
        (
            pod_of(healthproxy::webhook::MAX_CONTAINERS + 1, 1),
            "the pod has 257 containers, more than the 256",
        ),
        // Within the count, but the config and the record would pass the
        // API server's limit on annotations: it would reject the pod.
        (
            {
                let mut pod = pod_of(16, 2);
                pod["metadata"]["annotations"] = json!({"notes": "n".repeat((256 << 10) - 100)});
                pod
            },
            "the pod's annotations would be",
        ),
    ];
    for (pod, warning) in cases {
        let response = webhook.admit(&review(&pod, "kubernetes-admin")).await;
        assert!(response.get("patch").is_none(), "{warning}: no patch");
        let warnings = response["warnings"].as_array().unwrap();
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .starts_with("healthproxy: not injected: ")
                && warnings[0].as_str().unwrap().contains(warning),
            "{warnings:?}"
        );
    }
    // The largest pod it injects is injected.
    let pod = pod_of(healthproxy::webhook::MAX_CONTAINERS, 1);
    assert!(
        webhook
            .admit(&review(&pod, "kubernetes-admin"))
            .await
            .get("patch")
            .is_some()
    );
    let peak = peak_rss(&webhook);
    eprintln!("the webhook's peak RSS: {} KiB", peak >> 10);
    assert!(
        peak < 128 << 20,
        "under deploy/webhook's 128 Mi limit: {peak} bytes"
    );
    assert_eq!(
        metric(
            &webhook.metrics().await,
            "healthproxy_webhook_admissions_total{result=\"refused\"}"
        ),
        Some(3.0)
    );
}

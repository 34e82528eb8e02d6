//! Admission latency of `healthproxy webhook`: starts the given binary with
//! a fresh certificate, reads its idle RSS, then sends the AdmissionReview
//! of a Deployment's pod (two probes to move) from C clients at once, each
//! on its own kept-alive TLS connection as the API server keeps them, and
//! prints p50/p99 for each C. Client and server share the machine.
//!
//! Run with `cargo run --release --example bench-webhook --
//! target/release/healthproxy 1 50 200`.

use std::io::BufRead as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

/// Requests per level, spread over its clients.
const REQUESTS: usize = 4000;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(binary) = args.next() else {
        eprintln!("usage: bench-webhook BINARY C...");
        return ExitCode::from(2);
    };
    let levels: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let mut child = Command::new(&binary)
        .args([
            "webhook",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let started: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: std::net::SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    println!("idle VmRSS\t{} kB", vm_rss(child.id()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let body = Bytes::from(review());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!("clients\trequests\tp50 µs\tp99 µs\tmax µs");
    for c in levels {
        let mut latencies = runtime.block_on(level(addr, &connector, &body, c));
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_micros();
        println!(
            "{c}\t{}\t{}\t{}\t{}",
            latencies.len(),
            at(0.50),
            at(0.99),
            at(1.0)
        );
    }
    println!("VmRSS after\t{} kB", vm_rss(child.id()));
    let _ = child.kill();
    let _ = child.wait();
    ExitCode::SUCCESS
}

async fn level(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    body: &Bytes,
    clients: usize,
) -> Vec<Duration> {
    let per = REQUESTS.div_ceil(clients).max(20);
    let mut tasks = Vec::new();
    // Connect every client first: the figures are of admissions, not of
    // handshakes.
    let mut senders = Vec::new();
    for _ in 0..clients {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(rustls::pki_types::ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    for mut sender in senders {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(per);
            for _ in 0..per {
                let request = hyper::Request::post("/mutate")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let start = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let answer = response.into_body().collect().await.unwrap().to_bytes();
                took.push(start.elapsed());
                assert!(answer.windows(5).any(|w| w == b"patch"));
            }
            took
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

/// A Deployment's pod as the API server sends it: an httpGet liveness and
/// a tcpSocket readiness probe to move.
fn review() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "7c6a3f1e-0b5d-4c1a-9e2f-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {
                    "generateName": "web-7d9f8b6c5-", "namespace": "shop",
                    "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d9f8b6c5"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
                        "uid": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "containers": [{
                        "name": "web", "image": "registry.example/shop/web:1.4.2",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                        "readinessProbe": {"tcpSocket": {"port": "http"},
                            "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3},
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default", "securityContext": {}, "schedulerName": "default-scheduler"
                },
                "status": {}
            },
            "oldObject": null, "dryRun": false
        }
    }))
    .unwrap()
}

//! Mutual TLS for the http and grpc checks, against real servers on
//! 127.0.0.1 with rcgen-made CAs: a server that requires a client
//! certificate, a gRPC health server over TLS, and certificates rotated on
//! both sides while the check keeps running.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use healthproxy::check::{GrpcCheck, HttpCheck, Outcome, Reason, Verdict};
use healthproxy::config::{GrpcSpec, Host, HttpSpec, Scheme, TlsSpec};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tonic_health::ServingStatus;

use super::http_check::{Server, reply, spec};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The timeout of a gRPC run that is to fail to connect: it tries until
/// the timeout.
const FAILING: Duration = Duration::from_secs(1);

/// When the leaf certificates of these tests expire: 2031-05-17.
fn expiry() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(1_936_742_400)
}

/// A certificate authority made for one test.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files would hold them.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and `app.internal`, or a client
    /// certificate.
    fn issue(&self, name: &str, client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "app.internal".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The server's certificate, which the test may replace at any time.
#[derive(Debug)]
struct Rotating(Mutex<Arc<CertifiedKey>>);

impl Rotating {
    fn new(leaf: &Leaf) -> Arc<Rotating> {
        Arc::new(Rotating(Mutex::new(certified(leaf))))
    }

    fn rotate(&self, leaf: &Leaf) {
        *self.0.lock().unwrap() = certified(leaf);
    }
}

fn certified(leaf: &Leaf) -> Arc<CertifiedKey> {
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    Arc::new(CertifiedKey::from_der(chain, key, &ring::default_provider()).unwrap())
}

impl ResolvesServerCert for Rotating {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.lock().unwrap()))
    }
}

/// A TLS acceptor that presents `cert` and requires a client certificate
/// issued by `clients`.
fn requiring_client_certs(cert: Arc<Rotating>, clients: &Ca, alpn: &[u8]) -> TlsAcceptor {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(clients.der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// A TLS acceptor that presents `cert`, asks for no client certificate
/// and offers `alpn`.
fn serving(cert: Arc<Rotating>, alpn: &[&[u8]]) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

/// Files in a temporary directory, replaced as a rotation replaces them:
/// written aside, then renamed over the old ones.
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    fn put(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.path().join(name);
        let aside = self.0.path().join(format!("{name}.new"));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        path
    }

    fn client(&self, leaf: &Leaf) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.put("client.crt", &leaf.cert_pem),
            self.put("client.key", &leaf.key_pem),
        )
    }
}

fn mtls(files: &Files, ca: &Ca, client: Option<&Leaf>) -> TlsSpec {
    let (cert_file, key_file) = match client {
        Some(leaf) => {
            let (c, k) = files.client(leaf);
            (Some(c), Some(k))
        }
        None => (None, None),
    };
    TlsSpec {
        ca_file: Some(files.put("ca.pem", &ca.pem)),
        cert_file,
        key_file,
        server_name: None,
        insecure_skip_verify: false,
    }
}

fn https(port: u16, tls: TlsSpec) -> HttpSpec {
    HttpSpec {
        scheme: Scheme::Https,
        tls,
        ..spec(port, "/healthz")
    }
}

fn assert_tls_failure(outcome: &Outcome, needle: &str) {
    assert_eq!(
        (outcome.verdict, outcome.reason),
        (Verdict::Failure, Some(Reason::Tls)),
        "{outcome:?}"
    );
    assert!(outcome.message.contains(needle), "{needle:?} in {outcome:?}");
}

#[tokio::test]
async fn https_presents_the_client_certificate_a_server_requires() {
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let cert = Rotating::new(&server_ca.issue("app", false));
    let server = Server::start_with(
        Some(requiring_client_certs(cert, &client_ca, b"http/1.1")),
        Arc::new(|_: &super::http_check::Seen| reply(200, "ok")),
    )
    .await;
    let files = Files::new();

    let without = run_http(https(server.port(), mtls(&files, &server_ca, None))).await;
    assert_tls_failure(&without, "CertificateRequired");
    assert!(server.seen().is_empty());

    let client = client_ca.issue("probe", true);
    let with = run_http(https(server.port(), mtls(&files, &server_ca, Some(&client)))).await;
    assert_eq!(with.verdict, Verdict::Success, "{with:?}");
    assert_eq!(server.seen().len(), 1);
    // The leaf expires on 2031-05-17 (`date -u -d 2031-05-17 +%s`), before
    // its CA.
    assert_eq!(with.tls_expiry, Some(expiry()));
}

async fn run_http(spec: HttpSpec) -> Outcome {
    HttpCheck::new(spec).unwrap().run(TIMEOUT).await
}

#[tokio::test]
async fn https_follows_certificate_rotation_on_both_sides() {
    let (server_ca, client_ca, stranger) = (Ca::new("server ca"), Ca::new("client ca"), Ca::new("stranger"));
    let cert = Rotating::new(&server_ca.issue("app", false));
    let server = Server::start_with(
        Some(requiring_client_certs(Arc::clone(&cert), &client_ca, b"http/1.1")),
        Arc::new(|_: &super::http_check::Seen| reply(200, "ok")),
    )
    .await;
    let files = Files::new();
    let check = HttpCheck::new(https(
        server.port(),
        mtls(&files, &server_ca, Some(&client_ca.issue("probe", true))),
    ))
    .unwrap();
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);

    // The client side: a certificate the server does not trust, then a
    // good one again; each used from the next run on.
    files.client(&stranger.issue("probe", true));
    let outcome = check.run(TIMEOUT).await;
    assert_tls_failure(&outcome, "alert");
    files.client(&client_ca.issue("probe, renewed", true));
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);

    // The server side: a certificate from a new CA, unknown until the CA
    // bundle is rotated too.
    let new_ca = Ca::new("server ca 2");
    cert.rotate(&new_ca.issue("app", false));
    assert_tls_failure(&check.run(TIMEOUT).await, "UnknownIssuer");
    files.put("ca.pem", &format!("{}{}", server_ca.pem, new_ca.pem));
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);

    // Half a rotation (a key that is not the certificate's) fails the run
    // naming both files, and the next complete one heals it.
    let (a, b) = (client_ca.issue("a", true), client_ca.issue("b", true));
    files.put("client.crt", &a.cert_pem);
    files.put("client.key", &b.key_pem);
    let outcome = check.run(TIMEOUT).await;
    assert_tls_failure(&outcome, "client.key");
    files.put("client.key", &a.key_pem);
    assert_eq!(check.run(TIMEOUT).await.verdict, Verdict::Success);
}

#[tokio::test]
async fn server_name_is_sent_and_verified_instead_of_the_host() {
    let ca = Ca::new("server ca");
    let mut params = CertificateParams::new(vec!["app.internal".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "app");
    let key = KeyPair::generate().unwrap();
    let only_named = Leaf {
        cert_pem: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key_pem: key.serialize_pem(),
    };
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Rotating::new(&only_named));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server = Server::start_with(
        Some(TlsAcceptor::from(Arc::new(config))),
        Arc::new(|_: &super::http_check::Seen| reply(200, "ok")),
    )
    .await;
    let files = Files::new();
    let by_ip = run_http(https(server.port(), mtls(&files, &ca, None))).await;
    assert_tls_failure(&by_ip, "certificate not valid for name \"127.0.0.1\"");
    let named = run_http(https(
        server.port(),
        TlsSpec {
            server_name: Some("app.internal".into()),
            ..mtls(&files, &ca, None)
        },
    ))
    .await;
    assert_eq!(named.verdict, Verdict::Success, "{named:?}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_start_naming_both_files() {
    let ca = Ca::new("client ca");
    let files = Files::new();
    let (a, b) = (ca.issue("a", true), ca.issue("b", true));
    let cert_file = files.put("client.crt", &a.cert_pem);
    let key_file = files.put("client.key", &b.key_pem);
    let err = HttpCheck::new(https(
        1,
        TlsSpec {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..mtls(&files, &ca, None)
        },
    ))
    .unwrap_err();
    assert!(err.contains("client.crt") && err.contains("client.key"), "{err}");
}

// === gRPC over TLS ===

/// A TLS connection for tonic's server, which knows nothing of the peer.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A tonic health server behind `acceptor`; returns its port and reporter.
async fn grpc_tls_server(
    acceptor: TlsAcceptor,
) -> (
    u16,
    tonic_health::server::HealthReporter,
    tokio::task::JoinHandle<()>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsIo>>(4);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                // A refused handshake is the client's failure to see, not
                // the server's: it keeps serving.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(TlsIo(tls))).await;
                }
            });
        }
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
    });
    (port, reporter, task)
}

fn assert_healthy(outcome: &Outcome) {
    assert_eq!(
        (outcome.verdict, outcome.message.as_str(), outcome.tls_expiry),
        (Verdict::Success, "service healthy", Some(expiry())),
        "{outcome:?}"
    );
}

fn grpc(port: u16, tls: Option<TlsSpec>) -> GrpcSpec {
    GrpcSpec {
        host: Host {
            name: "127.0.0.1".into(),
            from_env: None,
        },
        port,
        service: String::new(),
        user_agent: "kube-probe/1.36".into(),
        tls,
    }
}

#[tokio::test]
async fn grpc_health_over_tls_with_a_client_certificate_and_rotation() {
    let (server_ca, client_ca, stranger) = (Ca::new("server ca"), Ca::new("client ca"), Ca::new("stranger"));
    let cert = Rotating::new(&server_ca.issue("app", false));
    let (port, reporter, task) =
        grpc_tls_server(requiring_client_certs(Arc::clone(&cert), &client_ca, b"h2")).await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let files = Files::new();
    let check = GrpcCheck::new(grpc(
        port,
        Some(mtls(&files, &server_ca, Some(&client_ca.issue("probe", true)))),
    ))
    .unwrap();
    assert_healthy(&check.run(TIMEOUT).await);
    reporter.set_service_status("", ServingStatus::NotServing).await;
    assert_eq!(check.run(TIMEOUT).await.reason, Some(Reason::NotServing));
    reporter.set_service_status("", ServingStatus::Serving).await;

    // Plaintext against a TLS server fails; so does a client certificate
    // the server does not trust, until the files are rotated. A failure
    // to connect is tried again until the timeout, as the kubelet's
    // blocking dial: a short one.
    let plain = GrpcCheck::new(grpc(port, None)).unwrap().run(FAILING).await;
    assert_eq!(plain.verdict, Verdict::Failure, "{plain:?}");
    files.client(&stranger.issue("probe", true));
    assert_eq!(check.run(FAILING).await.verdict, Verdict::Failure);
    files.client(&client_ca.issue("probe, renewed", true));
    assert_healthy(&check.run(TIMEOUT).await);

    // The server rotates to a new CA: unknown until the bundle follows.
    let new_ca = Ca::new("server ca 2");
    cert.rotate(&new_ca.issue("app", false));
    assert_tls_failure(&check.run(FAILING).await, "UnknownIssuer");
    files.put("ca.pem", &new_ca.pem);
    assert_healthy(&check.run(TIMEOUT).await);
    task.abort();
}

/// The kubelet's alpha gRPC over TLS (KEP-4939): `tls` alone is TLS
/// without verification, and a server that selects no `h2` by ALPN is
/// refused, as grpc-go's TLS credentials refuse it.
#[tokio::test]
async fn grpc_tls_alone_skips_verification_and_requires_h2_by_alpn() {
    let cert = Rotating::new(&Ca::new("a CA the check does not know").issue("app", false));
    let no_verify = || {
        Some(TlsSpec {
            insecure_skip_verify: true,
            ..TlsSpec::default()
        })
    };
    let (port, reporter, task) = grpc_tls_server(serving(Arc::clone(&cert), &[b"h2"])).await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let check = GrpcCheck::new(grpc(port, no_verify())).unwrap();
    assert_healthy(&check.run(TIMEOUT).await);
    task.abort();

    let (port, reporter, task) = grpc_tls_server(serving(cert, &[])).await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let outcome = GrpcCheck::new(grpc(port, no_verify()))
        .unwrap()
        .run(FAILING)
        .await;
    assert_tls_failure(&outcome, "missing selected ALPN property");
    assert!(
        outcome.message.starts_with(&format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        )),
        "{outcome:?}"
    );
    task.abort();
}

/// Through the binary: a client certificate from files named in the
/// config, and the server chain's expiry in the metrics.
#[tokio::test]
async fn the_sidecar_presents_its_client_certificate_and_exports_the_servers_expiry() {
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let cert = Rotating::new(&server_ca.issue("app", false));
    let server = Server::start_with(
        Some(requiring_client_certs(cert, &client_ca, b"http/1.1")),
        Arc::new(|_: &super::http_check::Seen| reply(200, "ok")),
    )
    .await;
    let files = Files::new();
    let tls = mtls(&files, &server_ca, Some(&client_ca.issue("probe", true)));
    let path = |p: Option<std::path::PathBuf>| format!("{:?}", p.unwrap().display().to_string());
    let proxy = super::support::Proxy::start(&format!(
        r#"
[[check]]
name = "app"
probes = ["readiness"]
http = {{ scheme = "https", port = {}, path = "/healthz", ca_file = {}, cert_file = {}, key_file = {} }}
"#,
        server.port(),
        path(tls.ca_file),
        path(tls.cert_file),
        path(tls.key_file),
    ));
    proxy.wait_status("/readyz", 200).await;
    let metrics = proxy.get("/metrics").await.body;
    assert_eq!(
        super::support::metric(
            &metrics,
            "healthproxy_check_tls_cert_expiry_timestamp_seconds{check=\"app\"}"
        ),
        Some(1_936_742_400.0),
        "{metrics}"
    );
}

/// A server whose chain holds a certificate with a non-ASCII `notAfter`
/// (crafted bytes: rcgen writes only valid times; unsigned, as a check
/// without `ca_file` reads but never verifies the chain past the leaf).
/// The certificate-expiry reader used to panic on it, so every run was
/// Unknown and `/livez` stayed 200 while the app answered 500. Now the
/// time is unread, the run is judged by the app's answer, and the chain's
/// readable expiry is still exported.
#[tokio::test]
async fn a_certificate_time_that_is_not_ascii_fails_nothing_but_the_apps_own_failure() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let ca = Ca::new("server ca");
    let leaf = ca.issue("app", false);
    let crafted = super::fuzz_regressions::certificate_expiring_at("3\u{e9}517000000Z".as_bytes());
    let chain = vec![
        CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap(),
        CertificateDer::from(crafted),
    ];
    let key = ring::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap())
        .unwrap();
    let presented = Arc::new(Rotating(Mutex::new(Arc::new(CertifiedKey::new(chain, key)))));
    let status = Arc::new(AtomicU16::new(200));
    let answer = Arc::clone(&status);
    let server = Server::start_with(
        Some(serving(presented, &[b"http/1.1"])),
        Arc::new(move |_: &super::http_check::Seen| reply(answer.load(Ordering::SeqCst), "app")),
    )
    .await;
    let proxy = super::support::Proxy::start(&format!(
        r#"
[[check]]
name = "app"
probes = ["liveness"]
period = "1s"
failure_threshold = 1
http = {{ scheme = "https", port = {}, path = "/healthz" }}
"#,
        server.port(),
    ));
    super::support::eventually(Duration::from_secs(20), "a successful run", || async {
        proxy
            .get("/livez?verbose&format=json")
            .await
            .body
            .contains("HTTP probe succeeded")
    })
    .await;
    let metrics = proxy.get("/metrics").await.body;
    assert_eq!(
        super::support::metric(
            &metrics,
            "healthproxy_check_tls_cert_expiry_timestamp_seconds{check=\"app\"}"
        ),
        Some(
            expiry()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        ),
        "{metrics}"
    );
    status.store(500, Ordering::SeqCst);
    proxy.wait_status("/livez", 503).await;
    let json = proxy.get("/livez?verbose&format=json").await.body;
    assert!(json.contains("HTTP probe failed with statuscode: 500"), "{json}");
    let logs = proxy.log_lines("").join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// A reload that adds a client certificate to a running check applies it:
/// the check is rebuilt with the new TLS settings, without a restart.
#[tokio::test]
async fn a_reload_that_adds_the_client_certificate_takes_effect() {
    let (server_ca, client_ca) = (Ca::new("server ca"), Ca::new("client ca"));
    let server = Server::start_with(
        Some(requiring_client_certs(
            Rotating::new(&server_ca.issue("app", false)),
            &client_ca,
            b"http/1.1",
        )),
        Arc::new(|_: &super::http_check::Seen| reply(200, "ok")),
    )
    .await;
    let files = Files::new();
    let tls = mtls(&files, &server_ca, Some(&client_ca.issue("probe", true)));
    let path = |p: &Option<std::path::PathBuf>| format!("{:?}", p.as_ref().unwrap().display().to_string());
    let config = |client: bool| {
        let client = if client {
            format!(
                ", cert_file = {}, key_file = {}",
                path(&tls.cert_file),
                path(&tls.key_file)
            )
        } else {
            String::new()
        };
        format!(
            r#"[reload]
watch = false
[[check]]
name = "app"
probes = ["readiness"]
period = "200ms"
http = {{ scheme = "https", port = {}, ca_file = {}{client} }}
"#,
            server.port(),
            path(&tls.ca_file),
        )
    };
    let proxy = super::support::Proxy::start(&config(false));
    super::support::eventually(Duration::from_secs(10), "a refused certificate", || async {
        let metrics = proxy.get("/metrics").await.body;
        super::support::metric(
            &metrics,
            "healthproxy_check_failures_total{check=\"app\",reason=\"tls\"}",
        )
        .is_some()
    })
    .await;
    assert_eq!(proxy.get("/readyz/app").await.status, 503);

    std::fs::write(proxy.config_path(), config(true)).unwrap();
    let reply = proxy.send("POST", "/reload", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("changed: app;"), "{}", reply.body);
    proxy.wait_status("/readyz/app", 200).await;
}

/// `check-config` loads every check's files as `run` would, and names
/// every check that cannot be prepared with the line of its table: a CA
/// file that is missing, a key that is not its certificate's.
#[test]
fn check_config_names_every_check_whose_files_do_not_load_with_its_line() {
    let ca = Ca::new("client ca");
    let files = Files::new();
    let (a, b) = (ca.issue("a", true), ca.issue("b", true));
    let cert = files.put("client.crt", &a.cert_pem);
    let key = files.put("client.key", &b.key_pem);
    let missing = files.0.path().join("no-such-ca.pem");
    let config = files.put(
        "hp.toml",
        &format!(
            r#"[[check]]
name = "missing"
probes = ["readiness"]
http = {{ scheme = "https", port = 1, ca_file = {:?} }}
[[check]]
name = "mismatched"
probes = ["readiness"]
grpc = {{ port = 1, tls = true, cert_file = {:?}, key_file = {:?} }}
"#,
            missing.display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        ),
    );
    let out = std::process::Command::new(super::support::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&config.display().to_string(), "FILE");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("FILE:1: check \"missing\": ca_file ") && lines[0].contains("no-such-ca.pem"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("FILE:5: check \"mismatched\": cert_file ")
            && lines[1].contains("client.crt")
            && lines[1].contains("client.key"),
        "{stderr}"
    );
}

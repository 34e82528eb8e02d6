//! Targets for `bench-http-cpu`'s checks beyond the kubelet's:
//!
//! ```not_rust
//! target/release/examples/bench-check-targets DIR
//! ```
//!
//! writes a CA, a server certificate for 127.0.0.1, a client certificate
//! and its key to DIR (`ca.pem`, `client.crt`, `client.key`), then serves a
//! health body of 1 KiB of JSON (`"status": "ready"` at its end) over HTTP,
//! HTTPS and HTTPS that requires a client certificate, on three ports it
//! prints as `http=PORT https=PORT mtls=PORT`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto::ring};

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: bench-check-targets DIR"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve(&dir));
}

/// A health body of 1 KiB: `"status": "ready"` at its end, so a pattern
/// reads all of it.
fn body() -> Bytes {
    let mut text = String::from("{\"checks\": [");
    for i in 0..24 {
        text.push_str(&format!("{{\"name\": \"dependency-{i:02}\", \"ok\": true}},"));
    }
    text.pop();
    text.push_str("], \"status\": \"ready\"}");
    Bytes::from(text)
}

async fn serve(dir: &Path) {
    let (ca, server, client) = certificates();
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.join("client.crt"), &client.0).unwrap();
    std::fs::write(dir.join("client.key"), &client.1).unwrap();
    let acceptor = |client_ca: Option<&str>| {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                    .unwrap();
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = vec![CertificateDer::from_pem_slice(server.0.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(server.1.as_bytes()).unwrap();
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    };
    let body = body();
    let mut ports = Vec::new();
    for tls in [None, Some(acceptor(None)), Some(acceptor(Some(&ca)))] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(listener.local_addr().unwrap().port());
        tokio::spawn(accept(listener, tls, body.clone()));
    }
    println!("http={} https={} mtls={}", ports[0], ports[1], ports[2]);
    std::future::pending::<()>().await;
}

/// Serves each connection on `listener`, over TLS when given an acceptor.
async fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, body: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, body) = (tls.clone(), body.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let _ = match tls {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
            };
        });
    }
}

/// A CA's PEM, and a server and a client certificate it issued, each as
/// (certificate PEM, key PEM).
fn certificates() -> (String, (String, String), (String, String)) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap().pem();
    let issuer = Issuer::new(params, key);
    let leaf = |purpose| {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf(ExtendedKeyUsagePurpose::ClientAuth);
    (ca, server, client)
}

//! The TLS client settings of HTTPS checks, built once per check, and
//! handshake errors in Go's words.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The ALPN name of HTTP/2.
pub(super) const ALPN_H2: &[u8] = b"h2";

/// The rustls client settings: HTTP/2 offered before HTTP/1.1, the ring
/// provider, and
/// either the CA bundle in `ca_file` or no verification at all.
pub(super) fn tls_config(ca_file: Option<&std::path::Path>) -> Result<ClientConfig, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = match ca_file {
        Some(path) => {
            let shown = path.display();
            let mut roots = RootCertStore::empty();
            let pem = crate::files::read_bounded(path, crate::files::MAX_CA_BYTES)
                .map_err(|e| format!("ca_file {shown}: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem);
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
                roots.add(cert).map_err(|e| format!("ca_file {shown}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {shown}: no certificate found"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerification { provider }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The kubelet's `InsecureSkipVerify`: any certificate is accepted, but the
/// handshake signatures are still checked, so the peer holds the key of the
/// certificate it sent.
#[derive(Debug)]
struct SkipVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS handshake error in Go's words: a plain HTTP server's answer is
/// recognised by its first five bytes, as net/http/transport.go
/// `(*persistConn).addTLS` recognises `tls.RecordHeaderError`.
pub(super) fn describe_tls(e: &std::io::Error, first: &[u8]) -> String {
    if first.starts_with(b"HTTP/") {
        return "http: server gave HTTP response to HTTPS client".into();
    }
    if first.first().is_some_and(|&t| !(0x14..=0x18).contains(&t)) {
        return "tls: first record does not look like a TLS handshake".into();
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "EOF".into();
    }
    format!("tls: {}", super::super::describe_io(e))
}

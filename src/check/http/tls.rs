//! The TLS client settings of HTTPS and gRPC checks: built when the check
//! is prepared, rebuilt when a certificate or key file rotates; and
//! handshake errors in Go's words.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto;
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsSpec;

/// The ALPN name of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// What an HTTPS check offers: HTTP/2 before HTTP/1.1, as the kubelet's
/// transport (kubelet-semantics §1.1).
pub(crate) const ALPN_HTTP: &[&[u8]] = &[ALPN_H2, b"http/1.1"];

/// The TLS client settings of a check, rebuilt when one of its files
/// changes: a CA bundle, client certificate or key rotated on disk (a
/// Kubernetes Secret or cert-manager) is used from the next run on.
#[derive(Debug)]
pub(crate) struct TlsClient {
    spec: TlsSpec,
    /// The ALPN protocols offered, most preferred first.
    alpn: &'static [&'static [u8]],
    /// The settings in use and the state of the files they were built from.
    current: Mutex<(Vec<Stamp>, Arc<ClientConfig>)>,
}

/// What identifies one version of a file: a rotation changes at least one
/// of these (an atomic rename changes the inode, an edit the time or size).
pub(crate) type Stamp = Option<(SystemTime, u64, u64)>;

impl TlsClient {
    /// Loads the files of `spec` once, so that a missing file, a bad PEM or
    /// a key that does not belong to its certificate stops the start.
    pub(crate) fn new(spec: TlsSpec, alpn: &'static [&'static [u8]]) -> Result<Self, String> {
        let stamps = stamps(&spec);
        let config = build(&spec, alpn)?;
        Ok(TlsClient {
            spec,
            alpn,
            current: Mutex::new((stamps, Arc::new(config))),
        })
    }

    /// The settings for the next handshake, rebuilt first if a file changed
    /// since the last. A file that no longer loads (half rotated) fails
    /// this run, and the next one tries again.
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, String> {
        let now = stamps(&self.spec);
        let mut current = self.current.lock().expect("not poisoned");
        if current.0 != now {
            let config = build(&self.spec, self.alpn)?;
            *current = (now, Arc::new(config));
        }
        Ok(Arc::clone(&current.1))
    }

    /// The name sent as SNI and verified: `server_name`, or `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.spec.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_string()).map_err(|e| format!("tls: invalid server name {name:?}: {e}"))
    }
}

/// Whether `e` was caused by TLS: with TLS 1.3 a server that refuses the
/// client's certificate says so after the handshake, in an alert that
/// reaches the client as a read error.
pub(crate) fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if e.is::<tokio_rustls::rustls::Error>()
            || inner.is_some_and(|i| i.is::<tokio_rustls::rustls::Error>())
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The stamps of the CA, certificate and key files, in that order.
pub(crate) fn stamps(spec: &TlsSpec) -> Vec<Stamp> {
    [&spec.ca_file, &spec.cert_file, &spec.key_file]
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(path.as_ref()?).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
        .collect()
}

/// The rustls client settings: the ALPN protocols given, the ring
/// provider, either the CA bundle in `ca_file` or no verification at all,
/// and the client certificate when one is configured.
fn build(spec: &TlsSpec, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let mut provider = crypto::ring::default_provider();
    provider.kx_groups.push(&P521_NAMED_ONLY);
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = match &spec.ca_file {
        Some(path) if !spec.insecure_skip_verify => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(roots)
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerification)),
    };
    let mut config = match (&spec.cert_file, &spec.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certificates("cert_file", cert_file)?;
            let pem = crate::files::read_bounded(key_file, crate::files::MAX_TOKEN_BYTES)
                .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "cert_file {} and key_file {}: {e}",
                    cert_file.display(),
                    key_file.display()
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // A full handshake every run, as the kubelet's transport (no session
    // cache): a rotated server certificate is verified at once.
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// The certificates of a PEM file, at least one.
pub(crate) fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = crate::files::read_bounded(path, crate::files::MAX_CA_BYTES)
        .map_err(|e| format!("{key} {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{key} {shown}: no certificate found"));
    }
    Ok(certs)
}

/// The kubelet's `InsecureSkipVerify`: any certificate is accepted, and
/// nothing in it is read. Go goes on to check the handshake signature
/// against the key of the certificate, but without the certificate
/// verified that proves nothing: whoever sits in the middle sends a
/// certificate of their own and signs with its key. Checking it here
/// would take parsing the certificate (webpki refuses X.509 v1) and keys
/// the provider cannot use (ring has no P-521 and no RSA key under 2,048
/// bits), and turn handshakes Go completes into failures
/// (docs/kubelet-parity.md, "HTTPS").
#[derive(Debug)]
pub(crate) struct SkipVerification;

/// The signature schemes Go's client offers, in its order (crypto/tls
/// defaults.go `defaultSupportedSignatureAlgorithms`, Go 1.25 and later:
/// without the SHA-1 schemes, which Go 1.24 still offered in TLS 1.2).
const GO_SIGNATURE_SCHEMES: [SignatureScheme; 10] = [
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
];

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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        GO_SIGNATURE_SCHEMES.to_vec()
    }
}

/// secp521r1, named in the ClientHello's supported groups after the
/// others, as Go's `defaultCurvePreferences` names it, but never used for
/// a key exchange (ring has no P-521). A TLS 1.2 server serves an ECDSA
/// certificate only on a curve the client names (RFC 8422 §5.1; OpenSSL
/// refuses the handshake otherwise), so naming it lets such a server
/// complete the handshake with X25519, P-256 or P-384, as with Go. A
/// server that will do the key exchange on P-521 alone still fails here
/// (docs/kubelet-parity.md, known deviations).
#[derive(Debug)]
struct P521NamedOnly;

static P521_NAMED_ONLY: P521NamedOnly = P521NamedOnly;

impl crypto::SupportedKxGroup for P521NamedOnly {
    fn start(&self) -> Result<Box<dyn crypto::ActiveKeyExchange>, tokio_rustls::rustls::Error> {
        Err(tokio_rustls::rustls::Error::General(
            "a key exchange on P-521 is not supported".into(),
        ))
    }

    fn name(&self) -> tokio_rustls::rustls::NamedGroup {
        tokio_rustls::rustls::NamedGroup::secp521r1
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

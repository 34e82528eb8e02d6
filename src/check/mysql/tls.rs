//! TLS as Connector/C does it for the MariaDB tools: asked for whenever
//! the server offers it; the certificate accepted as it is, or its chain
//! verified against `ca_file` (`--ssl-ca`), and its name against the host
//! too with `verify_server_cert` (`--ssl-verify-server-cert`).

use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::{Resumption, WebPkiServerVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, crypto,
};

use crate::check::http::tls::{Stamp, TlsClient, certificates, stamps};
use crate::config::{MysqlSpec, TlsSpec};

/// The TLS settings of a `mysql` check.
#[derive(Debug)]
pub(super) enum Tls {
    /// Any certificate (the tools' default), with the client certificate
    /// if one is set; rebuilt when its files rotate.
    Unverified(TlsClient),
    /// The chain verified against a CA bundle; rebuilt, as the other
    /// kinds' settings, when one of its files rotates.
    Verified(Box<Chain>),
}

/// The settings of [`Tls::Verified`].
#[derive(Debug)]
pub(super) struct Chain {
    spec: MysqlSpec,
    /// Its files, for their stamps.
    files: TlsSpec,
    /// The settings in use and the state of the files they came from.
    current: Mutex<(Vec<Stamp>, Arc<ClientConfig>)>,
}

impl Tls {
    /// The settings of `spec`, whose files are loaded once here so that a
    /// missing or bad file stops the start.
    pub(super) fn new(spec: &MysqlSpec) -> Result<Tls, String> {
        if spec.ca_file.is_none() {
            let tls = TlsSpec {
                cert_file: spec.cert_file.clone(),
                key_file: spec.key_file.clone(),
                insecure_skip_verify: true,
                ..TlsSpec::default()
            };
            return TlsClient::new(tls, &[]).map(Tls::Unverified);
        }
        let files = files(spec);
        let stamps = stamps(&files);
        let config = build(spec)?;
        Ok(Tls::Verified(Box::new(Chain {
            spec: spec.clone(),
            files,
            current: Mutex::new((stamps, Arc::new(config))),
        })))
    }

    /// The settings for the next handshake.
    pub(super) fn config(&self) -> Result<Arc<ClientConfig>, String> {
        match self {
            Tls::Unverified(client) => client.config(),
            Tls::Verified(chain) => {
                let now = stamps(&chain.files);
                let mut current = chain.current.lock().expect("not poisoned");
                if current.0 != now {
                    *current = (now, Arc::new(build(&chain.spec)?));
                }
                Ok(Arc::clone(&current.1))
            }
        }
    }
}

/// The files of `spec`, as the stamps of TLS settings read them.
fn files(spec: &MysqlSpec) -> TlsSpec {
    TlsSpec {
        ca_file: spec.ca_file.clone(),
        cert_file: spec.cert_file.clone(),
        key_file: spec.key_file.clone(),
        ..TlsSpec::default()
    }
}

/// The settings with a CA bundle: Connector/C (`ma_tls_connect`) checks
/// the chain whenever `--ssl-ca` is given and the host name only with
/// `--ssl-verify-server-cert`.
fn build(spec: &MysqlSpec) -> Result<ClientConfig, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if let Some(path) = &spec.ca_file {
        for cert in certificates("ca_file", path)? {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| format!("ca_file: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier {
            inner,
            names: spec.verify_server_cert,
        }));
    let mut config = match (&spec.cert_file, &spec.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certificates("cert_file", cert_file)?;
            let pem = crate::files::read_bounded(key_file, crate::files::MAX_TOKEN_BYTES)
                .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(config)
}

/// webpki's verification, with a certificate for another name accepted
/// unless `names`.
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

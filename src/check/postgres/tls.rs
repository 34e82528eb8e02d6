//! The TLS client settings of a `postgres` check, as libpq's
//! `initialize_SSL` (`fe-secure-openssl.c`) makes them for each
//! connection:
//!
//! - `sslrootcert` names a file that exists: the server's chain is
//!   verified against it in every mode that uses TLS (`require`, `prefer`
//!   and `allow` included: `SSL_VERIFY_PEER`); a file that does not exist
//!   means no verification, except in `verify-ca` and `verify-full`, where
//!   it is an error ("root certificate file ... does not exist").
//! - `verify-full` then checks the host name as libpq does (`names`).
//! - `sslcert`/`sslkey`: a client certificate when the certificate file
//!   exists, sent when the server asks for one.
//!
//! The chain is verified with webpki as rustls' own verifier does
//! (`verify_server_cert_signed_by_trust_anchor`), for the server-auth
//! usage, as OpenSSL's `ssl_server` purpose; only the name rule is
//! libpq's. The settings are rebuilt when a file changes (a rotated
//! Secret), and kept otherwise.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use tokio_rustls::rustls::crypto::{self, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::names;
use crate::check::http::tls::{SkipVerification, certificates};
use crate::config::SslMode;

/// A `postgres` check's TLS settings.
#[derive(Debug)]
pub(super) struct PgTls {
    files: Files,
    /// The settings in use and the state of the files they came from.
    current: Mutex<(Vec<Stamp>, Arc<ClientConfig>)>,
}

/// What the settings are built from.
#[derive(Debug)]
struct Files {
    mode: SslMode,
    /// The host as written: `verify-full` compares it with the
    /// certificate's names, and it is sent as SNI unless an address.
    host: String,
    rootcert: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

/// What identifies one version of a file (none: it does not exist).
type Stamp = Option<(SystemTime, u64, u64)>;

impl PgTls {
    /// Builds the settings once, so that a file that cannot be read, a bad
    /// PEM or a key that does not belong to its certificate stops the start.
    pub(super) fn new(
        mode: SslMode,
        host: &str,
        rootcert: Option<PathBuf>,
        client: Option<(PathBuf, PathBuf)>,
    ) -> Result<Self, String> {
        let files = Files {
            mode,
            host: host.to_string(),
            rootcert,
            client,
        };
        let stamps = files.stamps();
        let config = files.build()?;
        Ok(PgTls {
            files,
            current: Mutex::new((stamps, Arc::new(config))),
        })
    }

    /// The settings for the next handshake, rebuilt first if a file
    /// changed, appeared or went away.
    pub(super) fn config(&self) -> Result<Arc<ClientConfig>, String> {
        let now = self.files.stamps();
        let mut current = self.current.lock().expect("not poisoned");
        if current.0 != now {
            let config = self.files.build()?;
            *current = (now, Arc::new(config));
        }
        Ok(Arc::clone(&current.1))
    }

    /// The name for SNI; an address sends none, as libpq.
    pub(super) fn server_name(&self) -> Result<ServerName<'static>, String> {
        let host = &self.files.host;
        ServerName::try_from(host.clone()).map_err(|e| format!("invalid host name {host:?}: {e}"))
    }
}

impl Files {
    fn stamps(&self) -> Vec<Stamp> {
        let (cert, key) = match &self.client {
            Some((cert, key)) => (Some(cert), Some(key)),
            None => (None, None),
        };
        [self.rootcert.as_ref(), cert, key]
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(path?).ok()?;
                Some((meta.modified().ok()?, meta.len(), meta.ino()))
            })
            .collect()
    }

    fn build(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(crypto::ring::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("SSL error: {e}"))?;
        let roots = match &self.rootcert {
            Some(path) if path.exists() => Some(roots(path)?),
            Some(path) if self.mode.verifies() => {
                return Err(format!(
                    "root certificate file \"{}\" does not exist",
                    path.display()
                ));
            }
            _ => None,
        };
        let builder = match roots {
            Some(roots) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(LibpqVerifier {
                    roots,
                    host: (self.mode == SslMode::VerifyFull).then(|| self.host.clone()),
                    algorithms,
                })),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification)),
        };
        let mut config = match &self.client {
            Some((cert, key)) if cert.exists() => {
                let chain = certificates("sslcert", cert)?;
                key_permissions(key)?;
                let pem = crate::files::read_bounded(key, crate::files::MAX_TOKEN_BYTES)
                    .map_err(|e| format!("could not load private key file \"{}\": {e}", key.display()))?;
                let der = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| format!("could not load private key file \"{}\": {e}", key.display()))?;
                builder.with_client_auth_cert(chain, der).map_err(|e| {
                    format!(
                        "certificate \"{}\" does not match private key file \"{}\": {e}",
                        cert.display(),
                        key.display()
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        // A full handshake every run: a rotated certificate is verified
        // at once.
        config.resumption = Resumption::disabled();
        Ok(config)
    }
}

/// libpq refuses a private key others may read (fe-secure-openssl.c
/// `initialize_SSL`): a file of this process's user must be 0600 or
/// less, a file of root's 0640 or less. A Secret mounted with
/// Kubernetes' default mode, 0644, is refused by psql, and so here.
fn key_permissions(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("could not open private key file \"{}\": {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "private key file \"{}\" is not a regular file",
            path.display()
        ));
    }
    // The owner of /proc/self is this process's effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mode = meta.mode();
    if (Some(meta.uid()) == euid && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0) {
        return Err(format!(
            "private key file \"{}\" has group or world access; file must have permissions u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root",
            path.display()
        ));
    }
    Ok(())
}

/// The CA certificates of `sslrootcert`, in libpq's words when they do
/// not load.
fn roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let unreadable = |e: String| format!("could not read root certificate file \"{}\": {e}", path.display());
    let mut roots = RootCertStore::empty();
    for cert in certificates("sslrootcert", path).map_err(unreadable)? {
        roots.add(cert).map_err(|e| unreadable(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// The chain against `roots`, as rustls' `WebPkiServerVerifier` checks it;
/// then, for `verify-full`, libpq's name rule instead of webpki's.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Arc<RootCertStore>,
    /// The host to match (`verify-full`); none for `verify-ca` and a
    /// root certificate in the other modes.
    host: Option<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// libpq's message for a certificate whose names do not match.
#[derive(Debug)]
pub(super) struct NameMismatch(pub(super) String);

impl std::fmt::Display for NameMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameMismatch {}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if let Some(host) = &self.host {
            names::check(end_entity, host).map_err(|message| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                    Arc::new(NameMismatch(message)),
                )))
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

//! The serving key pair, read from two PEM files and read again when they
//! change (cert-manager renews the certificate; the kubelet swaps the
//! Secret's files in one rename). Every handshake gets the last pair that
//! loaded whole and matched: a half-written or mismatched pair is logged
//! and ignored until the files change again, so no handshake fails during
//! a rotation and none waits for one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How often the files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of the files without reading them.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

/// A [`ResolvesServerCert`] that serves the key pair last loaded from
/// `cert` and `key`.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Reloading {
    /// Loads the pair: an error when it cannot be read or does not match.
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<Arc<Reloading>> {
        let pair = load(cert, key)?;
        Ok(Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// A rustls server config serving this pair, HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// Looks at the files every `every` and loads them when they change;
    /// runs until dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = self.stamp();
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = self.stamp();
            if now == seen {
                continue;
            }
            // Read once per change: a bad pair is reported once, and read
            // again when either file changes again.
            seen = now;
            match load(&self.cert, &self.key) {
                Ok(pair) => {
                    *self.current.write().expect("not poisoned") = Arc::new(pair);
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
                Err(e) => tracing::warn!("serving certificate not reloaded, the previous one stays: {e:#}"),
            }
        }
    }

    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key]
            .iter()
            .map(|p| {
                use std::os::unix::fs::MetadataExt as _;
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            })
            .collect()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    use anyhow::Context as _;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let certs = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .with_context(|| format!("{}: no PEM private key", key.display()))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .with_context(|| format!("{}: not a usable private key", key.display()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(pair)
}

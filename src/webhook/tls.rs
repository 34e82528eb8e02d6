//! The serving key pair, read from two PEM files and read again when they
//! change (cert-manager renews the certificate; the kubelet swaps the
//! Secret's files in one rename). Every handshake gets the last pair that
//! loaded whole and matched: a half-written or mismatched pair is logged
//! and ignored until the files change again, so no handshake fails during
//! a rotation and none waits for one.
//!
//! The files are read off the runtime's threads, regular files only and
//! at most [`MAX_PEM_BYTES`] each: a path to a FIFO or `/dev/zero` is a
//! clear error rather than a frozen or exhausted webhook. A pair that has
//! expired, or expires within [`EXPIRY_WARNING`], is logged (at load, and
//! when the time comes) and its expiry exported as a metric: the API
//! server refuses it, and with `failurePolicy: Ignore` pods would be
//! created without the sidecar, silently.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// How often the files are looked at.
pub(crate) const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// The largest certificate or key file read: a chain of a few
/// certificates is a few KiB.
pub(crate) const MAX_PEM_BYTES: u64 = 1 << 20;
/// A pair expiring within this is warned about (cert-manager renews at
/// two thirds of a 90-day certificate's life, a month before it expires).
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a pair stands against the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    Valid,
    ExpiresSoon,
    Expired,
}

fn validity(expires: Option<SystemTime>, now: SystemTime) -> Validity {
    match expires {
        Some(at) if at <= now => Validity::Expired,
        Some(at) if at <= now + EXPIRY_WARNING => Validity::ExpiresSoon,
        _ => Validity::Valid,
    }
}

/// A loaded pair and when its chain first expires.
#[derive(Debug)]
struct Pair {
    key: Arc<CertifiedKey>,
    expires: Option<SystemTime>,
}

/// What identifies one version of the files without reading them.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

/// A [`ResolvesServerCert`] that serves the key pair last loaded from
/// `cert` and `key`.
#[derive(Debug)]
pub(crate) struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    expires: RwLock<Option<SystemTime>>,
    /// The files as they were just before the pair served was loaded: a
    /// change made after that is seen by the first look of `watch`.
    loaded: Stamp,
}

impl Reloading {
    /// Loads the pair: an error when it cannot be read or does not match.
    pub(crate) fn new(cert: &Path, key: &Path) -> anyhow::Result<Arc<Reloading>> {
        let loaded = stamp(cert, key);
        let pair = load(cert, key)?;
        let reloading = Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(pair.key),
            expires: RwLock::new(pair.expires),
            loaded,
        });
        reloading.warn_expiry(validity(pair.expires, SystemTime::now()));
        Ok(reloading)
    }

    /// When the certificate chain served now first expires (its earliest
    /// `notAfter`), if it can be read.
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        *self.expires.read().expect("not poisoned")
    }

    fn warn_expiry(&self, validity: Validity) {
        let Some(at) = self.expires() else { return };
        let at_secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let now = SystemTime::now();
        match validity {
            Validity::Valid => {}
            Validity::ExpiresSoon => tracing::warn!(
                cert = %self.cert.display(),
                expires = at_secs,
                "the serving certificate expires in {}: renew it, or the API server will refuse it",
                humantime::format_duration(Duration::from_secs(at.duration_since(now).unwrap_or_default().as_secs()))
            ),
            Validity::Expired => tracing::warn!(
                cert = %self.cert.display(),
                expires = at_secs,
                "the serving certificate expired {} ago: the API server refuses it, and pods are \
                 created without the sidecar while failurePolicy is Ignore",
                humantime::format_duration(Duration::from_secs(now.duration_since(at).unwrap_or_default().as_secs()))
            ),
        }
    }

    /// A rustls server config serving this pair, HTTP/1.1 by ALPN.
    pub(crate) fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
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
    pub(crate) async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = self.loaded.clone();
        let mut standing = validity(self.expires(), SystemTime::now());
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = self.stamp_off_runtime().await;
            if now != seen {
                // Read once per change: a bad pair is reported once, and
                // read again when either file changes again.
                seen = now;
                let this = Arc::clone(&self);
                let loaded = tokio::task::spawn_blocking(move || load(&this.cert, &this.key)).await;
                match loaded {
                    Ok(Ok(pair)) => {
                        *self.current.write().expect("not poisoned") = pair.key;
                        *self.expires.write().expect("not poisoned") = pair.expires;
                        tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                        standing = validity(pair.expires, SystemTime::now());
                        self.warn_expiry(standing);
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("serving certificate not reloaded, the previous one stays: {e:#}");
                    }
                    Err(e) => tracing::warn!("serving certificate not reloaded: {e}"),
                }
            }
            // The pair served comes closer to its expiry: said once when
            // it does.
            let now = validity(self.expires(), SystemTime::now());
            if now != standing {
                standing = now;
                self.warn_expiry(now);
            }
        }
    }

    /// [`stamp`] on a blocking thread: `stat` of a path on a hung
    /// volume must not hold a runtime worker.
    async fn stamp_off_runtime(self: &Arc<Self>) -> Stamp {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || stamp(&this.cert, &this.key))
            .await
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

/// What identifies the current version of `cert` and `key`.
fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key]
        .iter()
        .map(|p| {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<Pair> {
    use anyhow::Context as _;
    let read = |p: &Path| {
        crate::files::read_bounded(p, MAX_PEM_BYTES).with_context(|| format!("cannot read {}", p.display()))
    };
    let certs = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate", cert.display());
    }
    let expires = crate::check::http::expiry::earliest(&certs);
    let private = PrivateKeyDer::from_pem_slice(&read(key)?)
        .with_context(|| format!("{}: no PEM private key", key.display()))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .with_context(|| format!("{}: not a usable private key", key.display()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match()
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(Pair {
        key: Arc::new(pair),
        expires,
    })
}

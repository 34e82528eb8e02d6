//! The node's side, as the kubelet and a Service's load balancing do it,
//! from the root namespace over the pod address:
//!
//! - probes: a fresh connection per probe, `GET` with `User-Agent:
//!   kube-probe/1.33` and `Accept: */*`, a 1 s timeout, success for a
//!   status 200–399 (kubelet-semantics §1); `periodSeconds: 1`,
//!   `failureThreshold: 1` for startup and readiness and 2 for liveness,
//!   as the README advises (one slow answer on a busy machine must not
//!   restart the app). The startup,
//!   liveness and readiness workers share one ticker here; the kubelet
//!   gives each its own, which changes nothing these cases look at.
//! - a liveness failure restarts the app container: preStop hook, SIGTERM,
//!   and the new container at once (the first restart has no back-off,
//!   kubelet-semantics §7) or after a chosen gap; the probes begin again
//!   for the new container (§3.5).
//! - pod deletion (§3.7, §5.2, §5.4): liveness and startup probes stop,
//!   readiness goes on; the preStop hook (`User-Agent: kube-lifecycle/1.33`,
//!   no timeout of its own, status ignored), then SIGTERM to the app; a
//!   classic sidecar gets SIGTERM at once, a native one once the app has
//!   exited.
//! - a balancer that sends each request on a fresh connection to the
//!   endpoints whose pods are ready, following readiness with a lag (the
//!   endpoints controller and kube-proxy).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::net::Net;
use crate::pod::{APP_PORT, App, Sidecar, TOKEN};
pub use crate::support::probe::{Answer, get, probe};
use crate::support::probe::{TIMEOUT, USER_AGENT};

/// The kubelet's probe period.
pub const PERIOD: Duration = Duration::from_secs(1);
/// The pod's `terminationGracePeriodSeconds`.
pub const GRACE: Duration = Duration::from_secs(30);

/// The preStop `httpGet` hook to `/prestop`, with `token` (if any) in its
/// `Authorization` header: no timeout but the grace period's.
pub async fn prestop(sidecar: SocketAddr, token: Option<&str>) -> Result<Answer, String> {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
    get(sidecar, "/prestop", "kube-lifecycle/1.33", &headers, GRACE).await
}

/// The kubelet's handling of one pod whose app container's probes and
/// preStop hook point at the sidecar.
pub struct Kubelet {
    net: Arc<Net>,
    sidecar: SocketAddr,
    app: Arc<Mutex<Option<App>>>,
    ready: watch::Sender<bool>,
    restarts: Arc<AtomicU64>,
    stop: CancellationToken,
    /// The probe loop; it goes with the kubelet.
    task: AbortOnDropHandle<()>,
}

impl Kubelet {
    /// Starts the app container in `net` and probes it through the
    /// sidecar; a liveness failure restarts it, the new container
    /// listening `gap` after the old one has exited.
    pub fn start(net: Arc<Net>, sidecar: &Sidecar, gap: Duration) -> Kubelet {
        let app = Arc::new(Mutex::new(Some(App::start(&net))));
        let (ready, _) = watch::channel(false);
        let restarts = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = AbortOnDropHandle::new(tokio::spawn(probe_loop(
            Arc::clone(&net),
            sidecar.addr,
            Arc::clone(&app),
            ready.clone(),
            Arc::clone(&restarts),
            gap,
            stop.clone(),
        )));
        Kubelet {
            net,
            sidecar: sidecar.addr,
            app,
            ready,
            restarts,
            stop,
            task,
        }
    }

    /// The app container's readiness as the kubelet last saw it.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Waits until the pod is ready, at most `within`.
    pub async fn wait_ready(&self, within: Duration) {
        let mut ready = self.ready();
        tokio::time::timeout(within, ready.wait_for(|r| *r))
            .await
            .unwrap_or_else(|_| panic!("the pod was not ready within {within:?}"))
            .unwrap();
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Sets what the current app container's `/healthz` answers.
    pub fn set_app_health(&self, code: u16) {
        self.app.lock().unwrap().as_ref().unwrap().set_health(code);
    }

    /// Deletes the pod with a classic (`native = false`) or native sidecar
    /// and returns what the kubelet saw.
    pub async fn delete(mut self, sidecar: &mut Sidecar, native: bool) -> Deletion {
        let began = Instant::now();
        // Liveness and startup stop; readiness goes on, and a terminating
        // endpoint is not ready from the first moment.
        self.stop.cancel();
        let _ = (&mut self.task).await;
        self.ready.send_replace(false);
        let probing = CancellationToken::new();
        let readiness = tokio::spawn(readiness_during_termination(self.sidecar, probing.clone()));
        if !native {
            sidecar.terminate();
        }
        let hook = prestop(self.sidecar, Some(TOKEN)).await;
        let hook_took = began.elapsed();
        let app = self.app.lock().unwrap().take().unwrap();
        app.terminate().await;
        let app_exited = began.elapsed();
        // The app container's probes end with it.
        probing.cancel();
        let readiness = readiness.await.unwrap();
        if native {
            // A native sidecar is signalled once every app container has
            // exited.
            sidecar.terminate();
        }
        let code = sidecar.exit_code(GRACE).await;
        let sidecar_exited = began.elapsed();
        drop(self.net);
        Deletion {
            hook,
            hook_took,
            app_exited,
            sidecar_exited,
            sidecar_code: code,
            readiness,
        }
    }
}

/// What a pod deletion looked like from the node.
#[derive(Debug)]
pub struct Deletion {
    /// The preStop hook's answer.
    pub hook: Result<Answer, String>,
    /// When it returned, from the deletion.
    pub hook_took: Duration,
    /// When the app container had exited.
    pub app_exited: Duration,
    /// When the sidecar had exited, and its exit code.
    pub sidecar_exited: Duration,
    pub sidecar_code: Option<i32>,
    /// The readiness probes during termination, until the app had exited:
    /// answered (any status), and the errors of those not answered.
    pub readiness: (u64, Vec<String>),
}

async fn readiness_during_termination(sidecar: SocketAddr, stop: CancellationToken) -> (u64, Vec<String>) {
    let (mut answered, mut errors) = (0, Vec::new());
    let mut tick = tokio::time::interval(PERIOD / 4);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return (answered, errors),
        }
        match get(sidecar, "/readyz", USER_AGENT, &[], TIMEOUT).await {
            Ok(_) => answered += 1,
            Err(e) => errors.push(e),
        }
    }
}

async fn probe_loop(
    net: Arc<Net>,
    sidecar: SocketAddr,
    app: Arc<Mutex<Option<App>>>,
    ready: watch::Sender<bool>,
    restarts: Arc<AtomicU64>,
    gap: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PERIOD);
    let mut started = false;
    let mut liveness_failures = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if !started {
            started = probe(sidecar, "/startupz").await.is_ok();
            if !started {
                continue;
            }
        }
        if probe(sidecar, "/livez").await.is_err() {
            liveness_failures += 1;
        } else {
            liveness_failures = 0;
        }
        if liveness_failures == 2 {
            // failureThreshold 2: "Container app failed liveness probe,
            // will be restarted".
            liveness_failures = 0;
            ready.send_replace(false);
            let hook = prestop(sidecar, Some(TOKEN)).await;
            assert!(hook.is_ok(), "preStop hook failed: {hook:?}");
            let old = app.lock().unwrap().take().unwrap();
            old.terminate().await;
            tokio::time::sleep(gap).await;
            *app.lock().unwrap() = Some(App::start(&net));
            restarts.fetch_add(1, Ordering::SeqCst);
            // A new container: its probes start from their initial state.
            started = false;
            tick.reset();
            continue;
        }
        ready.send_replace(probe(sidecar, "/readyz").await.is_ok());
    }
}

/// A Service's load balancing: every `every`, one request on a fresh
/// connection to the next ready endpoint.
pub struct Balancer {
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Starts sending, to no endpoint yet.
    pub fn start(every: Duration) -> Balancer {
        let endpoints = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (endpoints, sent, failures, stop) = (
                Arc::clone(&endpoints),
                Arc::clone(&sent),
                Arc::clone(&failures),
                stop.clone(),
            );
            async move {
                let requests = tokio_util::task::TaskTracker::new();
                let mut tick = tokio::time::interval(every);
                let mut next = 0usize;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let target = {
                        let endpoints = endpoints.lock().unwrap();
                        if endpoints.is_empty() {
                            continue;
                        }
                        next = next.wrapping_add(1);
                        endpoints[next % endpoints.len()]
                    };
                    sent.fetch_add(1, Ordering::SeqCst);
                    let failures = Arc::clone(&failures);
                    requests.spawn(async move {
                        let answer = get(target, "/", "balancer", &[], Duration::from_secs(5)).await;
                        match answer {
                            Ok(a) if a.status == 200 && a.body == "hello" => {}
                            other => failures.lock().unwrap().push(format!("{target}: {other:?}")),
                        }
                    });
                }
                requests.close();
                requests.wait().await;
            }
        });
        Balancer {
            endpoints,
            sent,
            failures,
            stop,
            task,
        }
    }

    /// Adds the pod's app at `ip` while `ready` says so, `lag` after each
    /// change.
    pub fn follow(&self, app: SocketAddr, mut ready: watch::Receiver<bool>, lag: Duration) {
        let endpoints = Arc::clone(&self.endpoints);
        tokio::spawn(async move {
            loop {
                let now = *ready.borrow_and_update();
                let endpoints = Arc::clone(&endpoints);
                tokio::spawn(async move {
                    tokio::time::sleep(lag).await;
                    let mut endpoints = endpoints.lock().unwrap();
                    endpoints.retain(|e| *e != app);
                    if now {
                        endpoints.push(app);
                    }
                });
                if ready.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Sends to `app` from now on, whatever its readiness: a balancer that
    /// never lets go.
    pub fn add(&self, app: SocketAddr) {
        self.endpoints.lock().unwrap().push(app);
    }

    /// Whether `app` is an endpoint now.
    pub fn has(&self, app: SocketAddr) -> bool {
        self.endpoints.lock().unwrap().contains(&app)
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops, waits for the requests under way; returns the requests sent
    /// and the failures.
    pub async fn finish(self) -> (u64, Vec<String>) {
        self.stop.cancel();
        let _ = self.task.await;
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

/// The app's address in a pod.
pub fn app_addr(net: &Net) -> SocketAddr {
    net.addr(APP_PORT)
}

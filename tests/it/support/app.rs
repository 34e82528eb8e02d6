//! A small app on 127.0.0.1 whose health the test switches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

/// A small app on 127.0.0.1 whose `/healthz` and `/started` answer the
/// statuses they are set to (200 unless started otherwise); dropping it closes its
/// listener, as a killed container's closes.
pub struct App {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    started: Arc<AtomicU16>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    pub async fn start() -> App {
        App::start_on(0, 200, 200).await
    }

    /// The app on `port` (0: any free one), `/healthz` answering `healthz`
    /// and `/started` answering `started` from its first request.
    pub async fn start_on(port: u16, healthz: u16, started: u16) -> App {
        let (status, started) = (
            Arc::new(AtomicU16::new(healthz)),
            Arc::new(AtomicU16::new(started)),
        );
        let answer = |code: &Arc<AtomicU16>| {
            let code = Arc::clone(code);
            axum::routing::get(move || {
                let code = code.load(Ordering::SeqCst);
                async move { (axum::http::StatusCode::from_u16(code).unwrap(), "health") }
            })
        };
        let app = axum::Router::new()
            .route("/healthz", answer(&status))
            .route("/started", answer(&started));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        App {
            addr,
            status,
            started,
            task: Some(task),
        }
    }

    /// The status of `/healthz`.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// The status of `/started`.
    pub fn set_started(&self, code: u16) {
        self.started.store(code, Ordering::SeqCst);
    }

    /// Stops the app and returns once its listener is closed, so that the
    /// next app can listen on the same port at once.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

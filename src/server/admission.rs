//! Admission control: what clients may make the endpoints hold or do at
//! once, apart from what the endpoints answer from. Large answers hold a
//! share of a memory budget until read ([`answers`]); answers that grow
//! with the checks are rendered one at a time off the thread that answers
//! the probes, with a bounded queue; scrapes that arrive together share
//! one rendering; and the log lines clients can cause are rate-limited.
//! The HTTP connections' own cap is the listener's (`table`).

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::answers::{Answers, Scrapes, Waiters};

/// The bounds of the endpoints' work for their clients.
#[derive(Debug)]
pub(crate) struct Admission {
    /// How many more refused lifecycle requests may be logged now.
    pub(super) refusals_logged: Mutex<LogBudget>,
    /// What large answers waiting for their clients may hold.
    pub(super) answers: Answers,
    /// `/metrics` renderings shared by the scrapes waiting for them.
    pub(super) scrapes: Scrapes<Result<Bytes, Unsent>>,
    /// One permit: the rendering of a large answer under way.
    renders: Semaphore,
    /// Requests waiting for that permit.
    waiting_renders: Waiters,
}

impl Admission {
    pub(super) fn new() -> Admission {
        Admission {
            refusals_logged: Mutex::new(LogBudget::new()),
            answers: Answers::new(),
            scrapes: Scrapes::default(),
            renders: Semaphore::new(1),
            waiting_renders: Waiters::default(),
        }
    }

    /// What `render` returns, run on a blocking thread once no other
    /// rendering runs: answers that grow with the checks (JSON, verbose,
    /// `/metrics`) take milliseconds with thousands of checks, and a flood
    /// of them must neither hold the thread that answers the kubelet's
    /// probes nor take more than one core. Past
    /// [`MAX_WAITING`](super::answers::MAX_WAITING) waiting, the answer
    /// is busy at once.
    pub(super) async fn render<T: Send + 'static>(
        &self,
        render: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unsent> {
        if self.answers.spent() {
            return Err(Unsent::Busy);
        }
        let turn = {
            let waiting = self.waiting_renders.enter().ok_or(Unsent::Busy)?;
            let turn = self.renders.acquire().await.expect("never closed");
            drop(waiting);
            turn
        };
        let rendered = tokio::task::spawn_blocking(render).await;
        drop(turn);
        rendered.map_err(|e| {
            tracing::error!("rendering an answer failed: {e}");
            Unsent::Failed
        })
    }
}

/// Why a large answer is not sent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unsent {
    /// Rendering it failed.
    Failed,
    /// The answers' budget is spent, or too many wait to render.
    Busy,
}

/// A token bucket for log lines that clients can cause: `BURST` at once,
/// then `PER_SECOND`; what it holds back is counted and said with the next
/// line it lets through. A flood of refused requests from the pod network
/// then costs a few lines a second, not one per request (the metric counts
/// every one).
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    at: std::time::Instant,
    held_back: u64,
}

impl LogBudget {
    const BURST: f64 = 20.0;
    const PER_SECOND: f64 = 1.0;

    pub(crate) fn new() -> Self {
        LogBudget {
            tokens: Self::BURST,
            at: std::time::Instant::now(),
            held_back: 0,
        }
    }

    /// `Some(n)` when a line may be logged, `n` being how many were held
    /// back since the last; `None` when this one is held back.
    pub(crate) fn take(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.at = now;
        if self.tokens < 1.0 {
            self.held_back += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.held_back))
    }
}

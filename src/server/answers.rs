//! Large answers within a memory budget. An answer stays in memory until
//! its client has read it, and a client on the pod network may never read:
//! a thousand connections each asking for `/metrics` or `?format=json` of
//! a large config, reading nothing, would hold a thousand copies. Answers
//! longer than [`SMALL`] (the connection's own budget covers those) each
//! hold a share of [`BUDGET`] for as long as any of their bytes exist; one
//! that finds the budget spent is not sent, and the client gets 503
//! instead. One answer larger than the whole budget is sent when nothing
//! else holds any of it, so every answer can be had.
//!
//! The kubelet's verdicts never depend on it: a plain probe that passes
//! answers `ok`, and a large plain answer is a failing one (every check
//! listed), whose 503 stands.
//!
//! Scrapes that arrive while `/metrics` is being rendered share the next
//! rendering ([`Scrapes`]): a flood of scrapes costs one rendering at a
//! time and one copy of its bytes (held once), not one of each per
//! request; past [`MAX_WAITING`] waiting, a scrape is busy at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Answers up to this long are left to the connection's budget.
pub(crate) const SMALL: usize = 4 << 10;

/// What the answers longer than [`SMALL`] may hold in all.
pub(crate) const BUDGET: u64 = 1 << 20;

/// The budget, in KiB permits. A cheap handle.
#[derive(Debug, Clone)]
pub(crate) struct Answers {
    kib: Arc<Semaphore>,
}

impl Answers {
    pub(crate) fn new() -> Answers {
        Answers {
            kib: Arc::new(Semaphore::new(TOTAL_KIB as usize)),
        }
    }

    /// Whether the budget has no room left for an answer longer than
    /// [`SMALL`]: such an answer is then not worth rendering.
    pub(crate) fn spent(&self) -> bool {
        self.kib.available_permits() <= SMALL >> 10
    }

    /// `body`, holding its share of the budget for as long as any of its
    /// bytes live (the last clone of it dropped, or the connection gone);
    /// `None` when the budget is spent.
    pub(crate) fn hold(&self, body: Bytes) -> Option<Bytes> {
        if body.len() <= SMALL {
            return Some(body);
        }
        let kib = u32::try_from(body.len().div_ceil(1024)).unwrap_or(u32::MAX);
        let share = Arc::clone(&self.kib)
            .try_acquire_many_owned(kib.min(TOTAL_KIB))
            .ok()?;
        Some(Bytes::from_owner(Held { body, _share: share }))
    }
}

const TOTAL_KIB: u32 = (BUDGET >> 10) as u32;

/// An answer's bytes and the share of the budget they hold.
struct Held {
    body: Bytes,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// `/metrics` renderings, shared by the scrapes that wait for them.
#[derive(Debug)]
pub(crate) struct Scrapes<T> {
    /// Renderings begun.
    begun: AtomicU64,
    /// Scrapes waiting for or reading `last`.
    waiting: Waiters,
    /// The latest rendering and its number, while scrapes wait for it.
    last: tokio::sync::Mutex<Option<(u64, T)>>,
}

impl<T> Default for Scrapes<T> {
    fn default() -> Self {
        Scrapes {
            begun: AtomicU64::new(0),
            waiting: Waiters::default(),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Scrapes<T> {
    /// What a scrape answers: a rendering begun after this scrape arrived,
    /// shared with the scrapes that waited alongside it, or rendered by
    /// `render` now (one at a time). `None` when [`MAX_WAITING`] already
    /// wait.
    pub(crate) async fn get<F>(&self, render: F) -> Option<T>
    where
        F: AsyncFnOnce() -> T,
    {
        let arrived = self.begun.load(Ordering::Acquire);
        let waiting = Scraping {
            scrapes: self,
            waiter: Some(self.waiting.enter()?),
        };
        let mut last = self.last.lock().await;
        let body = match &*last {
            Some((number, body)) if *number >= arrived => body.clone(),
            _ => {
                let number = self.begun.fetch_add(1, Ordering::AcqRel);
                let body = render().await;
                *last = Some((number, body.clone()));
                body
            }
        };
        drop(last);
        drop(waiting);
        Some(body)
    }
}

/// A scrape counted among those waiting, until it has its answer or is
/// dropped (its client gone). The last one out lets the rendering go:
/// kept, it would hold its share of the budget until the next scrape.
struct Scraping<'a, T> {
    scrapes: &'a Scrapes<T>,
    waiter: Option<Waiter<'a>>,
}

impl<T> Drop for Scraping<'_, T> {
    fn drop(&mut self) {
        if self.waiter.take().is_some_and(|waiter| waiter.leave() == 0) {
            // Held only by a scrape that came in since: it waits, and
            // the last one out after it lets go.
            if let Ok(mut last) = self.scrapes.last.try_lock() {
                *last = None;
            }
        }
    }
}

/// How many requests may wait at once for a rendering, theirs or one to
/// share. Past it, the answer is busy at once: requests in progress are
/// the last that a full connection table closes, and a crowd of them
/// would leave a kubelet probe's fresh connection as the one to close.
pub(crate) const MAX_WAITING: usize = 8;

/// The requests waiting for something, at most [`MAX_WAITING`].
#[derive(Debug, Default)]
pub(crate) struct Waiters(AtomicUsize);

/// One of [`Waiters`], counted until dropped.
pub(crate) struct Waiter<'a>(&'a AtomicUsize);

impl Waiters {
    /// A place among the waiters; `None` when [`MAX_WAITING`] already wait.
    pub(crate) fn enter(&self) -> Option<Waiter<'_>> {
        let fits = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING).then_some(n + 1)
            })
            .is_ok();
        // Made only when counted: dropped, it counts itself out.
        fits.then(|| Waiter(&self.0))
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Waiter<'_> {
    /// Stops waiting; how many still wait.
    fn leave(self) -> usize {
        let left = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        std::mem::forget(self);
        left
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[test]
    fn large_answers_hold_the_budget_while_their_bytes_live() {
        let answers = Answers::new();
        // Small ones are free.
        let small: Vec<_> = (0..1000).map(|_| answers.hold(bytes(SMALL)).unwrap()).collect();
        let quarter = usize::try_from(BUDGET / 4).unwrap();
        let held: Vec<_> = (0..4).map(|_| answers.hold(bytes(quarter)).unwrap()).collect();
        assert!(answers.hold(bytes(SMALL + 1)).is_none(), "the budget is spent");
        // A clone (a shared rendering, a chunk hyper still writes) keeps
        // the share held; the last one gives it back.
        let clone = held[0].slice(..10);
        drop(held);
        assert!(answers.hold(bytes(quarter * 3 + 1024)).is_none());
        assert!(answers.hold(bytes(quarter * 3)).is_some());
        drop(clone);
        let whole = answers.hold(bytes(quarter * 4)).unwrap();
        assert_eq!(whole.len(), quarter * 4);
        drop(whole);
        // Larger than the whole budget: only when nothing else holds any.
        let huge = answers.hold(bytes(quarter * 8)).unwrap();
        assert!(answers.hold(bytes(SMALL + 1)).is_none());
        drop(huge);
        drop(small);
    }

    /// One scrape; if it renders, its rendering is numbered by `renders`
    /// and ends when `gate` opens.
    async fn scrape(
        scrapes: Arc<Scrapes<Option<Bytes>>>,
        renders: Arc<AtomicUsize>,
        mut gate: tokio::sync::watch::Receiver<bool>,
    ) -> Option<Bytes> {
        scrapes
            .get(async move || {
                let n = renders.fetch_add(1, Ordering::AcqRel);
                gate.wait_for(|open| *open).await.unwrap();
                Some(Bytes::from(format!("rendering {n}")))
            })
            .await
            .unwrap_or(None)
    }

    #[tokio::test]
    async fn scrapes_waiting_together_share_one_rendering_begun_after_they_arrived() {
        let scrapes = Arc::new(Scrapes::<Option<Bytes>>::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        // The first scrape renders; seven arrive while it does.
        let first = tokio::spawn(scrape(Arc::clone(&scrapes), Arc::clone(&renders), gate.clone()));
        while renders.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let waiting: Vec<_> = (0..MAX_WAITING - 1)
            .map(|_| tokio::spawn(scrape(Arc::clone(&scrapes), Arc::clone(&renders), gate.clone())))
            .collect();
        while scrapes.waiting.count() < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        // One more is turned away at once.
        let crowded = scrapes.get(async || unreachable!("never renders")).await;
        assert!(crowded.is_none());
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), "rendering 0");
        for scrape in waiting {
            // Not the first rendering: it began before they arrived.
            assert_eq!(scrape.await.unwrap().unwrap(), "rendering 1");
        }
        assert_eq!(renders.load(Ordering::Acquire), 2);
        // Nobody waits: nothing is kept, and the next scrape renders anew.
        assert!(scrapes.last.lock().await.is_none());
        // A scrape whose client goes while it waits is not counted.
        let held = scrapes.last.lock().await;
        let gone = tokio::spawn(scrape(Arc::clone(&scrapes), Arc::clone(&renders), gate.clone()));
        while scrapes.waiting.count() == 0 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        assert_eq!(scrapes.waiting.count(), 0);
        drop(held);
        let next = scrape(Arc::clone(&scrapes), Arc::clone(&renders), gate.clone()).await;
        assert_eq!(next.unwrap(), "rendering 2");
    }

    #[test]
    fn requests_waiting_are_counted_in_and_out_and_bounded() {
        let waiting = Waiters::default();
        let all: Vec<_> = (0..MAX_WAITING).map(|_| waiting.enter().unwrap()).collect();
        for _ in 0..3 {
            assert!(waiting.enter().is_none());
        }
        assert_eq!(waiting.count(), MAX_WAITING);
        drop(all);
        assert_eq!(waiting.count(), 0);
        assert!(waiting.enter().is_some());
    }
}

//! The open connections of a listener, oldest first, and the sweep
//! that closes those with no request in progress for too long. Every
//! accepted connection is in it from its first moment, including while
//! its request head is still arriving: hyper's graceful shutdown does
//! nothing to a connection in the middle of a head, so closing one here
//! means dropping it, which frees its socket and buffers at once. The
//! gRPC endpoint and the webhook keep theirs in the same table (`held`):
//! their connections never say whether a request is in progress, so the
//! oldest is the one closed to make room.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::time::Instant;

/// One open connection, shared by its task and the table.
pub(super) struct Slot {
    /// The first bytes have arrived and the connection is read (by the
    /// front path, then hyper).
    pub(super) reading: AtomicBool,
    /// Requests begun and ended: one is in progress while they differ
    /// (HTTP/1.1 serves one at a time). Two counters rather than a clock
    /// read per request: the sweep notices a change, and that is when it
    /// last saw activity.
    pub(super) begun: AtomicU64,
    pub(super) ended: AtomicU64,
    /// Set before `closing` when the server stops, rather than to make
    /// room.
    pub(super) stopping: AtomicBool,
    /// The connection must go; `waker` wakes its task. A flag and one
    /// waker rather than a `Notify`, whose waiter list takes a lock on
    /// every wait: the task waits for it around every request.
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            reading: AtomicBool::new(false),
            begun: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Tells the connection to go.
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the connection has been told to go; the connection's
    /// own task waits for it.
    pub(super) fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_closed(cx))
    }

    /// [`Slot::closed`] for a connection's reads and writes (`held`),
    /// which its one task polls.
    pub(super) fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.closing.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.begun.load(Ordering::Acquire) != self.ended.load(Ordering::Acquire)
    }
}

/// A connection in the table, with what the sweep last saw of it.
pub(super) struct Entry {
    slot: Arc<Slot>,
    /// `begun` when the sweep last looked.
    seen: u64,
    /// Since when nothing has happened on it: accepted, or a request seen
    /// in progress or begun.
    quiet_since: Instant,
}

/// The open connections, oldest first.
#[derive(Default)]
pub(super) struct Open {
    next: u64,
    by_age: BTreeMap<u64, Entry>,
    /// Connection tasks alive: those in `by_age` and those told to close
    /// that have not yet.
    live: usize,
}

impl Open {
    /// Takes a new connection in, closing one first to make room when
    /// `cap` are open ([`Open::evict_one`]): its id and its slot.
    pub(super) fn admit(&mut self, cap: usize) -> (u64, Arc<Slot>) {
        if self.by_age.len() >= cap {
            self.evict_one();
        }
        let id = self.next;
        self.next += 1;
        let slot = Arc::new(Slot::new());
        let entry = Entry {
            slot: Arc::clone(&slot),
            seen: 0,
            quiet_since: Instant::now(),
        };
        self.by_age.insert(id, entry);
        self.live += 1;
        (id, slot)
    }

    /// The connection `id`'s task has ended.
    pub(super) fn leave(&mut self, id: u64) {
        self.by_age.remove(&id);
        self.live -= 1;
    }

    /// Connection tasks alive: those in the table and those told to close
    /// that have not yet.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Closes one connection to make room: the oldest that has sent bytes
    /// but has no request in progress (a head still arriving, or idle
    /// after an answer); else the oldest not yet read from; else the
    /// oldest. A kubelet probe is a fresh connection whose head is
    /// answered in the same turn as it is first read, so it is never in
    /// the first group, and under a flood it waits in the second behind
    /// every older connection.
    pub(super) fn evict_one(&mut self) -> bool {
        let idle = |entry: &Entry| !entry.slot.busy();
        let victim = self
            .by_age
            .iter()
            .find(|(_, entry)| idle(entry) && entry.slot.reading.load(Ordering::Acquire))
            .or_else(|| self.by_age.iter().find(|(_, entry)| idle(entry)))
            .or_else(|| self.by_age.first_key_value())
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.by_age.remove(&id)) {
            Some(entry) => {
                entry.slot.close();
                true
            }
            None => false,
        }
    }

    /// Closes the connections with no request in progress for too long at
    /// `now`: `first_head` without a whole first request head since they
    /// were accepted, `idle` since the end of their last answer. A head
    /// half-sent after an answer is an idle connection here; hyper's own
    /// header timer, which this replaces, would also have closed it
    /// within `first_head` of the answer. Closed within a sweep's period
    /// of their due time, never before it.
    pub(super) fn sweep(&mut self, now: Instant, first_head: Duration, idle: Duration) {
        self.by_age.retain(|_, entry| {
            let begun = entry.slot.begun.load(Ordering::Acquire);
            if begun != entry.seen || entry.slot.busy() {
                entry.seen = begun;
                entry.quiet_since = now;
                return true;
            }
            let limit = if begun == 0 {
                first_head
            } else {
                idle.min(first_head)
            };
            let expired = now.saturating_duration_since(entry.quiet_since) >= limit;
            if expired {
                entry.slot.close();
            }
            !expired
        });
    }

    /// Tells every connection that the server stops.
    pub(super) fn stop_all(&mut self) {
        for entry in self.by_age.values() {
            entry.slot.stopping.store(true, Ordering::Release);
            entry.slot.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reading: bool, busy: bool) -> Entry {
        let slot = Slot::new();
        slot.reading.store(reading, Ordering::Release);
        slot.begun.store(u64::from(busy), Ordering::Release);
        Entry {
            slot: Arc::new(slot),
            seen: 0,
            quiet_since: Instant::now(),
        }
    }

    fn ids(open: &Open) -> Vec<u64> {
        open.by_age.keys().copied().collect()
    }

    #[tokio::test]
    async fn eviction_takes_half_sent_and_idle_ones_first_and_spares_requests_in_progress() {
        let mut open = Open::default();
        // Not read from yet, busy, half-sent or idle, not read from, busy,
        // half-sent or idle.
        let connections = [
            (false, false),
            (true, true),
            (true, false),
            (false, false),
            (true, true),
            (true, false),
        ];
        for (id, (reading, busy)) in (0..).zip(connections) {
            open.by_age.insert(id, entry(reading, busy));
        }
        let half_sent = Arc::clone(&open.by_age[&2].slot);
        assert!(open.evict_one());
        assert_eq!(ids(&open), [0, 1, 3, 4, 5]);
        // Told, for the connection to see when it looks.
        half_sent.closed().await;
        assert!(open.evict_one());
        assert_eq!(ids(&open), [0, 1, 3, 4]);
        // Then those not read from yet, oldest first.
        assert!(open.evict_one());
        assert_eq!(ids(&open), [1, 3, 4]);
        assert!(open.evict_one());
        assert_eq!(ids(&open), [1, 4]);
        // Only busy ones left: the oldest goes.
        assert!(open.evict_one());
        assert_eq!(ids(&open), [4]);
    }

    #[tokio::test]
    async fn the_sweep_closes_late_first_heads_and_idle_connections_never_before_their_time() {
        const FIRST_HEAD: Duration = Duration::from_secs(10);
        const IDLE: Duration = Duration::from_secs(5);
        let mut open = Open::default();
        // 0: never sends a whole head; 1: answered once, then idle; 2: a
        // request in progress all along; 3: a request now and then.
        for id in 0..4 {
            open.by_age.insert(id, entry(true, false));
        }
        let start = open.by_age[&0].quiet_since;
        let slot = |open: &Open, id| Arc::clone(&open.by_age[&id].slot);
        let (idle, busy, active) = (slot(&open, 1), slot(&open, 2), slot(&open, 3));
        idle.begun.store(1, Ordering::Release);
        idle.ended.store(1, Ordering::Release);
        busy.begun.store(1, Ordering::Release);
        let second = Duration::from_secs(1);
        for t in 1..=12 {
            if t % 3 == 0 {
                active.begun.fetch_add(1, Ordering::AcqRel);
                active.ended.fetch_add(1, Ordering::AcqRel);
            }
            open.sweep(start + t * second, FIRST_HEAD, IDLE);
            let open_ids = ids(&open);
            // Idle from the first sweep on (t = 1): due at t = 6.
            assert_eq!(open_ids.contains(&1), t < 6, "t = {t}: {open_ids:?}");
            // Accepted at t = 0 with nothing begun: due at t = 10.
            assert_eq!(open_ids.contains(&0), t < 10, "t = {t}: {open_ids:?}");
            assert!(open_ids.contains(&2) && open_ids.contains(&3), "t = {t}");
        }
        // The idle one was told to go.
        idle.closed().await;
        // A kept-alive connection is held no longer than a first head.
        let mut open = Open::default();
        open.by_age.insert(0, entry(true, false));
        let slot = slot(&open, 0);
        slot.begun.store(1, Ordering::Release);
        slot.ended.store(1, Ordering::Release);
        open.sweep(start, Duration::from_secs(2), IDLE);
        open.sweep(start + Duration::from_secs(2), Duration::from_secs(2), IDLE);
        assert!(ids(&open).is_empty());
    }
}

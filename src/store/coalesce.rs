//! The queue behind PostgreSQL's coalesced statements (`head_reads`, `pg_appends`): requests
//! that arrive while a statement is in flight wait, and the next statement takes them together.
//!
//! Invariants:
//! - At most one task drains a queue at a time: the request that finds no drainer starts one,
//!   and the drainer stops only when it finds the queue empty (checked under the same lock that
//!   queues), so no request is left waiting without a drainer.
//! - A request queued while a statement is in flight goes in a later statement: each answer
//!   comes from a statement that began after its request was queued.
//! - A drainer that panics clears the mark, so the next request starts a new one; the requests
//!   of its batch see their answer channel closed.

use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// A request and where its answer goes.
pub(super) type Waiting<T, A> = (T, oneshot::Sender<A>);

struct State<T, A> {
    waiting: Vec<Waiting<T, A>>,
    /// Whether a task is draining the queue.
    draining: bool,
}

/// A queue of requests for one kind of coalesced statement.
pub(super) struct Queue<T, A>(Arc<Mutex<State<T, A>>>);

impl<T, A> Clone for Queue<T, A> {
    fn clone(&self) -> Self {
        Queue(self.0.clone())
    }
}

impl<T, A> Default for Queue<T, A> {
    fn default() -> Self {
        Queue(Arc::new(Mutex::new(State {
            waiting: Vec::new(),
            draining: false,
        })))
    }
}

impl<T, A> Queue<T, A> {
    fn lock(&self) -> MutexGuard<'_, State<T, A>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `request`. Returns where its answer will arrive, and whether the caller must start
    /// the drainer (no task is draining).
    pub(super) fn push(&self, request: T) -> (oneshot::Receiver<A>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        state.waiting.push((request, tx));
        let start = !std::mem::replace(&mut state.draining, true);
        (rx, start)
    }

    /// The drainer's next batch, chosen by `take` from what waits (what it leaves keeps waiting);
    /// `None` when nothing waits, and then the drainer must stop: the queue is marked undrained.
    pub(super) fn next_batch(
        &self,
        take: impl FnOnce(&mut Vec<Waiting<T, A>>) -> Vec<Waiting<T, A>>,
    ) -> Option<Vec<Waiting<T, A>>> {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            state.draining = false;
            return None;
        }
        Some(take(&mut state.waiting))
    }

    /// How many requests wait for a statement.
    pub(super) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// For the drainer to hold while it runs: if it unwinds, the queue is marked undrained.
    pub(super) fn drainer_guard(&self) -> DrainerGuard<T, A> {
        DrainerGuard(self.clone())
    }
}

/// Marks its queue undrained when the drainer holding it panics.
pub(super) struct DrainerGuard<T, A>(Queue<T, A>);

impl<T, A> Drop for DrainerGuard<T, A> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().draining = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_request_starts_a_drainer_until_the_queue_is_found_empty() {
        let queue: Queue<u32, ()> = Queue::default();
        let (_a, start_a) = queue.push(1);
        let (_b, start_b) = queue.push(2);
        assert!(start_a);
        assert!(!start_b);
        let batch = queue.next_batch(std::mem::take).expect("two wait");
        assert_eq!(batch.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1, 2]);
        // Queued while the batch is out: no new drainer, the running one takes it next.
        let (_c, start_c) = queue.push(3);
        assert!(!start_c);
        assert_eq!(queue.waiting(), 1);
        assert!(queue.next_batch(std::mem::take).is_some());
        assert!(queue.next_batch(std::mem::take).is_none());
        // The drainer stopped: the next request starts one.
        let (_d, start_d) = queue.push(4);
        assert!(start_d);
    }

    #[test]
    fn a_drainer_that_panics_lets_the_next_request_start_another() {
        let queue: Queue<u32, ()> = Queue::default();
        let (_a, _) = queue.push(1);
        let q = queue.clone();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = q.drainer_guard();
            let _batch = q.next_batch(std::mem::take);
            panic!("drainer failed");
        }));
        assert!(unwound.is_err());
        let (_b, start) = queue.push(2);
        assert!(start);
    }
}

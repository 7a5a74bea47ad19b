//! The statistics of this process: a copy in memory of the `stat_facts` read model, as a
//! [`StatsIndex`], that every statistics request first brings up to date and then reads.
//!
//! Why a copy that reads the table, not one fed by the local projector: on PostgreSQL several
//! replicas serve one database and only one of them projects, so every replica must see the
//! projector's writes wherever they were made. Reading the table also makes the copy exactly what
//! the read model says, restarts and rebuilds included.
//!
//! Invariants:
//! - Each answer reflects one snapshot of the read models: the facts of a catch-up and the
//!   checkpoint it reports come from one read-only transaction
//!   ([`Store::read_stat_facts`]), and the index is only changed under its write lock, whole
//!   batches at a time, together with that checkpoint. `as_of_position` is that checkpoint.
//! - An answer is never older than its request: it is computed after a catch-up that began after
//!   the request arrived (its own, or one that another request began meanwhile).
//! - Rows are read after the last `row_id` seen, which is complete because the projector's ids
//!   grow in commit order (see `store::migrations`); when the read models' generation moves (a
//!   rebuild swapped tables in, or migration 3 ran), the copy is read again from the start.
//! - One catch-up at a time (a mutex), run on its own task: concurrent requests share one, and a
//!   client that goes away cannot cut a reload short.

use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tiaojie_projections::facts::FactKind;
use tiaojie_projections::index::{FactRow, StatsIndex};
use uuid::Uuid;

/// This process's statistics. Cheap to clone (one shared copy).
#[derive(Clone)]
pub struct StatsMirror {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Held for the duration of a catch-up: one at a time.
    catching_up: tokio::sync::Mutex<()>,
    /// Catch-ups begun (the number of the latest one).
    begun: AtomicU64,
    /// The number of the latest catch-up that succeeded.
    done: AtomicU64,
    /// Full reads of the facts so far.
    loads: AtomicU64,
    state: RwLock<Mirrored>,
}

struct Mirrored {
    index: StatsIndex,
    /// The live checkpoint the index reflects.
    position: i64,
    /// (generation, last row id) of the rows in the index; `None` before the first read.
    seen: Option<(i64, i64)>,
}

/// A fact row owned, to carry a catch-up's new rows from the read to the write lock.
struct OwnedFact {
    case_id: Uuid,
    seq: i64,
    kind: FactKind,
    room_id: String,
    category: String,
    occurred_at: i64,
    amount_fen: Option<i64>,
    duration_us: Option<i64>,
    label: Option<String>,
}

impl OwnedFact {
    fn of(row: FactRow<'_>) -> OwnedFact {
        OwnedFact {
            case_id: row.case_id,
            seq: row.seq,
            kind: row.kind,
            room_id: row.room_id.to_string(),
            category: row.category.to_string(),
            occurred_at: row.occurred_at,
            amount_fen: row.amount_fen,
            duration_us: row.duration_us,
            label: row.label.map(str::to_string),
        }
    }

    fn row(&self) -> FactRow<'_> {
        FactRow {
            case_id: self.case_id,
            seq: self.seq,
            kind: self.kind,
            room_id: &self.room_id,
            category: &self.category,
            occurred_at: self.occurred_at,
            amount_fen: self.amount_fen,
            duration_us: self.duration_us,
            label: self.label.as_deref(),
        }
    }
}

impl StatsMirror {
    /// An empty copy of `store`'s statistics; the first request (or [`StatsMirror::catch_up`])
    /// loads it.
    pub fn new(store: Store) -> StatsMirror {
        StatsMirror {
            inner: Arc::new(Inner {
                store,
                catching_up: tokio::sync::Mutex::new(()),
                begun: AtomicU64::new(0),
                done: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                state: RwLock::new(Mirrored {
                    index: StatsIndex::new(),
                    position: 0,
                    seen: None,
                }),
            }),
        }
    }

    /// How many times the copy was read from the start: once at first, then once after each
    /// swap of the read-model tables (for tests and operators).
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(Ordering::SeqCst)
    }

    /// Brings the copy up to the read models as they are now, then answers `f` from it, with
    /// the checkpoint position the copy reflects.
    pub async fn read<T>(&self, f: impl FnOnce(&StatsIndex) -> T) -> Result<(T, i64), StoreError> {
        self.catch_up().await?;
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok((f(&state.index), state.position))
    }

    /// Brings the copy up to the read models as they are now: waits for a catch-up that begins
    /// after this call, running it unless another caller already does.
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        let arrived = self.inner.begun.load(Ordering::SeqCst);
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.catch_up_after(arrived).await })
            .await
            .unwrap_or_else(|e| Err(StoreError::Database(format!("statistics task failed: {e}"))))
    }
}

impl Inner {
    async fn catch_up_after(&self, arrived: u64) -> Result<(), StoreError> {
        let _one = self.catching_up.lock().await;
        if self.done.load(Ordering::SeqCst) > arrived {
            // A catch-up that began after the caller arrived has finished meanwhile.
            return Ok(());
        }
        let number = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        self.read_new_facts().await?;
        self.done.store(number, Ordering::SeqCst);
        Ok(())
    }

    async fn read_new_facts(&self) -> Result<(), StoreError> {
        let seen = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            state.seen
        };
        let started = std::time::Instant::now();
        // A full read goes straight into a new index (the old one keeps answering meanwhile);
        // new rows are kept until the write lock is taken.
        let mut fresh = StatsIndex::new();
        let mut new_rows: Vec<OwnedFact> = Vec::new();
        let read = {
            let mut loader = fresh.loader();
            self.store
                .read_stat_facts(seen, &mut |from_start, row| {
                    if from_start {
                        loader.insert(row);
                    } else {
                        new_rows.push(OwnedFact::of(row));
                    }
                })
                .await?
        };
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => {
                // A panic while the index was changed may have left it half-changed: nothing
                // read from it is trusted until it is read again from the start.
                let mut state = poisoned.into_inner();
                state.seen = None;
                self.state.clear_poison();
                if !read.from_start {
                    return Err(StoreError::Database(
                        "statistics copy discarded after a failure; it reloads on the next request"
                            .into(),
                    ));
                }
                state
            }
        };
        if read.from_start {
            state.index = fresh;
            self.loads.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                facts = state.index.len(),
                cases = state.index.case_count(),
                heap_mb = state.index.heap_bytes() / 1_000_000,
                generation = read.generation,
                position = read.position,
                ms = started.elapsed().as_millis() as u64,
                "statistics loaded from the read models"
            );
        } else if !new_rows.is_empty() {
            let mut loader = state.index.loader();
            for row in &new_rows {
                loader.insert(row.row());
            }
        }
        state.position = read.position;
        state.seen = Some((read.generation, read.last_row_id));
        Ok(())
    }
}

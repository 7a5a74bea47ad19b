//! Coalesced reads of case heads on PostgreSQL: the check a cached case read makes.
//!
//! Role: a `GET` of a cached case needs only the stored head's sequence, one key lookup. Under
//! load, many such lookups arrive at once; sent one by one, each costs PostgreSQL a statement
//! and a round trip, which dominated the read's cost. Here the lookups that arrive while one is
//! in flight wait and go together in the next single `= ANY($2)` statement.
//!
//! Invariants:
//! - Exactness: every lookup is answered by a statement that *began after the lookup was
//!   asked*. A lookup asked while a statement is running waits for the next one, so its answer
//!   includes every append acknowledged (by any replica) before it was asked, exactly as a lookup
//!   of its own would.
//! - At most one statement is in flight per store (`coalesce`); it runs on a spawned task, so a
//!   caller that goes away cannot cancel it half-way, and the other callers of its batch are still
//!   answered.
//! - A failed statement fails every lookup of its batch with the same error, and nothing else.

use sqlx::postgres::PgPool;
use std::collections::HashMap;

use super::coalesce::Queue;
use super::{db_error, StoreError};

/// How many lookups go into one statement at most.
const BATCH: usize = 256;

type Answer = Result<Option<i64>, StoreError>;

/// The coalescing head reader of one store.
#[derive(Clone)]
pub(super) struct HeadReads {
    pool: PgPool,
    aggregate_type: &'static str,
    queue: Queue<String, Answer>,
}

impl HeadReads {
    pub(super) fn new(pool: PgPool, aggregate_type: &'static str) -> Self {
        HeadReads {
            pool,
            aggregate_type,
            queue: Queue::default(),
        }
    }

    /// The last sequence the stored head records for `case_id` (`None`: no head, no events),
    /// as of some moment after this call began.
    pub(super) async fn last_sequence(&self, case_id: &str) -> Answer {
        let (rx, start) = self.queue.push(case_id.to_string());
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drain().await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Database(
                "the head lookup task stopped before answering".into(),
            ))
        })
    }

    /// Sends what waits, one statement at a time, until nothing waits.
    async fn drain(self) {
        let _guard = self.queue.drainer_guard();
        while let Some(batch) = self.queue.next_batch(|waiting| {
            let n = waiting.len().min(BATCH);
            waiting.drain(..n).collect()
        }) {
            let mut ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            let found: Result<Vec<(String, i64)>, _> = sqlx::query_as(
                "SELECT aggregate_id, last_sequence FROM case_heads \
                 WHERE aggregate_type = $1 AND aggregate_id = ANY($2)",
            )
            .bind(self.aggregate_type)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await;
            match found {
                Ok(rows) => {
                    let heads: HashMap<String, i64> = rows.into_iter().collect();
                    for (id, tx) in batch {
                        let _ = tx.send(Ok(heads.get(&id).copied()));
                    }
                }
                Err(e) => {
                    let e = db_error(e);
                    for (_, tx) in batch {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

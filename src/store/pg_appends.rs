//! Group commit on PostgreSQL: the single-event appends that arrive together go to the database
//! as one statement, one transaction, one WAL flush.
//!
//! Role: a command appends one event whose place in its case's chain is already known (from the
//! state cache or the load just made). Sent alone, each such append is a statement, a commit and
//! a round trip of its own; under load those per-transaction costs were most of PostgreSQL's
//! work per command. Here appends that arrive while a statement is in flight wait and go together
//! in the next one: rows passed as arrays, each checked against its own case's head, inserted,
//! and the heads moved, in one `INSERT … SELECT FROM unnest(…)`.
//!
//! Invariants:
//! - Each append is answered only after the statement holding it has returned, and a statement
//!   returns after its transaction's commit (`synchronous_commit` as configured: on), so an
//!   acknowledged event is durable exactly as a lone append's would be.
//! - One case's conflict never fails another's append. Each row is inserted only when its case's
//!   stored head is the one it chains to, and any unique violation (the case's next sequence, a
//!   case number, an idempotency key: a lost race) skips only that row (`ON CONFLICT DO
//!   NOTHING`). The rows actually inserted come back from the statement; the others are
//!   conflicts, which their callers handle as before (decide again on the case as it is now).
//! - A statement holds at most one row per case: a second append to a case waits for the next
//!   statement (it chains after the first only if the first committed). Rows are inserted in case
//!   id order, so two processes' statements lock rows in the same order and cannot deadlock.
//! - At most one statement is in flight per store (`coalesce`), on a spawned task: a caller that
//!   goes away cannot cancel it half-way, and the rest of its group is still answered.
//! - An error of the statement itself (the database gone, say) fails every append of the group
//!   with that error. A statement that failed did not commit, so none of them was written; only
//!   a connection lost just as the commit was sent leaves the outcome unknown, exactly as for a
//!   lone append (a retry with the same `Idempotency-Key` is then answered from the log).

use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistenceError;
use sqlx::postgres::PgPool;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::coalesce::{Queue, Waiting};

/// How many appends go into one statement at most.
const GROUP: usize = 128;

/// One event to append, chained and encoded.
pub(super) struct Row {
    pub case_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

/// What became of one append.
#[derive(Debug)]
pub(super) enum Appended {
    /// Written and committed.
    Written,
    /// Not written: the case's head was not the one the event chains to, or another unique
    /// key (case number, idempotency key) was taken.
    Conflict,
}

type Answer = Result<Appended, Arc<sqlx::Error>>;

/// What the PostgreSQL group appender has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgGroupStats {
    /// Group statements that returned (each one transaction, one commit).
    pub statements: u64,
    /// Appends in those statements.
    pub rows: u64,
    /// Appends found in conflict (not written) by those statements.
    pub conflicts: u64,
    /// Statements in which some appends were written and others were in conflict.
    pub mixed_groups: u64,
    /// Group statements that failed whole (every append in them answered with the error).
    pub failed_statements: u64,
    /// The most appends one statement held.
    pub largest_group: u64,
    /// Appends waiting for the next statement right now.
    pub waiting: u64,
}

/// The group appender of one store.
#[derive(Clone)]
pub(super) struct PgAppends {
    pool: PgPool,
    aggregate_type: &'static str,
    queue: Queue<Row, Answer>,
    stats: Arc<Mutex<PgGroupStats>>,
}

const SQL: &str = "\
WITH input AS ( \
    SELECT * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::timestamptz[], $9::text[], $10::text[]) \
        AS i(aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
), ev AS ( \
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
    SELECT $1, i.aggregate_id, i.sequence, i.event_type, i.event_version, i.payload::json, i.metadata::json, \
           i.recorded_at, i.prev_hash, i.hash \
    FROM input i \
    WHERE COALESCE( \
        (SELECT h.last_sequence = i.sequence - 1 AND h.head_hash = i.prev_hash FROM case_heads h \
         WHERE h.aggregate_type = $1 AND h.aggregate_id = i.aggregate_id), \
        i.sequence = 1) \
    ORDER BY i.aggregate_id \
    ON CONFLICT DO NOTHING \
    RETURNING aggregate_id, sequence, hash \
) \
INSERT INTO case_heads (aggregate_type, aggregate_id, last_sequence, head_hash) \
SELECT $1, aggregate_id, sequence, hash FROM ev ORDER BY aggregate_id \
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, head_hash = EXCLUDED.head_hash \
RETURNING aggregate_id";

impl PgAppends {
    pub(super) fn new(pool: PgPool, aggregate_type: &'static str) -> Self {
        PgAppends {
            pool,
            aggregate_type,
            queue: Queue::default(),
            stats: Arc::default(),
        }
    }

    /// The aggregate type of every row this appender writes.
    pub(super) fn aggregate_type(&self) -> &'static str {
        self.aggregate_type
    }

    /// Appends `row` in the next group statement and answers once that statement has committed.
    pub(super) async fn append(&self, row: Row) -> Result<Appended, PersistenceError> {
        let (rx, start) = self.queue.push(row);
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drain().await });
        }
        match rx.await {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(e)) => Err(super::repository::shared_persistence_error(&e)),
            Err(_) => Err(PersistenceError::UnknownError(
                "the group append task stopped before answering".into(),
            )),
        }
    }

    /// Sends what waits, one statement at a time, until nothing waits.
    async fn drain(self) {
        let _guard = self.queue.drainer_guard();
        while let Some(group) = self.queue.next_batch(take_group) {
            let outcome = self.send(&group).await;
            self.count(group.len(), &outcome);
            match outcome {
                Ok(written) => {
                    for (row, tx) in group {
                        let appended = if written.contains(&row.case_id) {
                            Appended::Written
                        } else {
                            Appended::Conflict
                        };
                        let _ = tx.send(Ok(appended));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for (_, tx) in group {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn count(&self, rows: usize, outcome: &Result<HashSet<String>, sqlx::Error>) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(written) => {
                let conflicts = (rows - written.len()) as u64;
                stats.statements += 1;
                stats.rows += rows as u64;
                stats.conflicts += conflicts;
                if conflicts > 0 && !written.is_empty() {
                    stats.mixed_groups += 1;
                }
                stats.largest_group = stats.largest_group.max(rows as u64);
            }
            Err(_) => stats.failed_statements += 1,
        }
    }

    /// What this appender has done so far.
    pub(super) fn stats(&self) -> PgGroupStats {
        let stats = *self.stats.lock().unwrap_or_else(|p| p.into_inner());
        PgGroupStats {
            waiting: self.queue.waiting() as u64,
            ..stats
        }
    }

    /// One statement for `group` (one row per case); returns the cases whose row was written.
    async fn send(&self, group: &[Waiting<Row, Answer>]) -> Result<HashSet<String>, sqlx::Error> {
        let n = group.len();
        let mut ids = Vec::with_capacity(n);
        let mut sequences = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut recorded = Vec::with_capacity(n);
        let mut prevs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for (row, _) in group {
            ids.push(row.case_id.as_str());
            sequences.push(row.sequence);
            types.push(row.event_type.as_str());
            versions.push(row.event_version.as_str());
            payloads.push(row.payload.as_str());
            metadata.push(row.metadata.as_str());
            recorded.push(row.recorded_at);
            prevs.push(row.prev_hash.as_str());
            hashes.push(row.hash.as_str());
        }
        let written: Vec<String> = sqlx::query_scalar(SQL)
            .bind(self.aggregate_type)
            .bind(&ids)
            .bind(&sequences)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata)
            .bind(&recorded)
            .bind(&prevs)
            .bind(&hashes)
            .fetch_all(&self.pool)
            .await?;
        Ok(written.into_iter().collect())
    }
}

/// Takes up to `GROUP` waiting appends, at most one per case, in arrival order; the rest wait.
fn take_group<T>(waiting: &mut Vec<(Row, T)>) -> Vec<(Row, T)> {
    let mut cases = HashSet::new();
    let mut group = Vec::new();
    let mut rest = Vec::new();
    for entry in waiting.drain(..) {
        if group.len() < GROUP && cases.insert(entry.0.case_id.clone()) {
            group.push(entry);
        } else {
            rest.push(entry);
        }
    }
    *waiting = rest;
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, sequence: i64) -> Row {
        Row {
            case_id: case.into(),
            sequence,
            event_type: "NoteAdded".into(),
            event_version: "1".into(),
            payload: "{}".into(),
            metadata: "{}".into(),
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_group_holds_one_row_per_case_and_the_rest_wait_in_order() {
        let mut waiting: Vec<(Row, usize)> = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]
            .into_iter()
            .enumerate()
            .map(|(i, (c, s))| (row(c, s), i))
            .collect();
        let group = take_group(&mut waiting);
        let taken: Vec<usize> = group.iter().map(|(_, i)| *i).collect();
        assert_eq!(taken, vec![0, 1, 3]);
        let left: Vec<usize> = waiting.iter().map(|(_, i)| *i).collect();
        assert_eq!(left, vec![2, 4]);
        let group = take_group(&mut waiting);
        assert_eq!(
            group.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_group_is_capped() {
        let mut waiting: Vec<(Row, ())> = (0..GROUP + 5)
            .map(|i| (row(&format!("case-{i}"), 1), ()))
            .collect();
        assert_eq!(take_group(&mut waiting).len(), GROUP);
        assert_eq!(waiting.len(), 5);
    }
}

//! The append path with the hash chain: our `PersistedEventRepository` for each store. Reads go
//! to postgres-es / sqlite-es unchanged; `persist` is ours, because every appended event must be
//! chained in the same transaction that stores it.
//!
//! Invariants:
//! - Every writer appends through [`persist`](PersistedEventRepository::persist) here; there is
//!   no other INSERT into `events`.
//! - In one transaction: read the case's head (`case_heads`), chain and insert the new events
//!   with the time they are recorded, move the head. A head that moved meanwhile, or a sequence
//!   already taken, is an optimistic-lock conflict and nothing is written.
//! - `recorded_at` is truncated to microseconds before it is hashed, so what is stored is exactly
//!   what was hashed on both stores.

use crate::audit::chain::{self, EventFields, Hash};
use chrono::{DateTime, SubsecRound, Utc};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::{PgPool, SqlitePool};

/// `recorded_at` as stored and hashed.
pub fn recorded_at_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db)
            if matches!(
                db.code().as_deref(),
                Some("23505") | Some("2067") | Some("1555")
            ) =>
        {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => PersistenceError::ConnectionError(Box::new(err)),
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}

/// One event ready to insert: its canonical texts and its place in the chain.
struct Chained {
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    prev_hash: String,
    hash: String,
}

/// Chains `events` after `prev` (the head's hash), all recorded at `recorded_at`.
fn chain_events(events: &[SerializedEvent], mut prev: Hash, recorded_at: &str) -> Vec<Chained> {
    events
        .iter()
        .map(|e| {
            let metadata: &Value = &e.metadata;
            let hash = chain::event_hash(
                &prev,
                &EventFields {
                    case_id: &e.aggregate_id,
                    sequence: e.sequence as u64,
                    event_type: &e.event_type,
                    event_version: &e.event_version,
                    payload: &e.payload,
                    recorded_at,
                    metadata,
                },
            );
            let mut payload = String::new();
            chain::canonical_json(&e.payload, &mut payload);
            let mut meta = String::new();
            chain::canonical_json(metadata, &mut meta);
            let chained = Chained {
                sequence: e.sequence as i64,
                event_type: e.event_type.clone(),
                event_version: e.event_version.clone(),
                payload,
                metadata: meta,
                prev_hash: chain::hex(&prev),
                hash: chain::hex(&hash),
            };
            prev = hash;
            chained
        })
        .collect()
}

/// The head a new batch must follow: `(last_sequence, head_hash)`, or a conflict when the
/// case moved on since it was loaded.
fn expect_head(
    first_sequence: usize,
    head: Option<(i64, String)>,
) -> Result<Hash, PersistenceError> {
    let expected = first_sequence as i64 - 1;
    match head {
        None if expected == 0 => Ok(chain::ZERO),
        Some((last, hash)) if last == expected => chain::parse_hex(&hash).ok_or_else(|| {
            PersistenceError::UnknownError(
                "the case's stored head hash is not a SHA-256 hex value".into(),
            )
        }),
        Some(_) => Err(PersistenceError::OptimisticLockError),
        None => Err(PersistenceError::UnknownError(
            "the case has events but no recorded head: the log was altered".into(),
        )),
    }
}

/// PostgreSQL: postgres-es for reads, the chained append for writes.
pub struct PgChainedRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
}

impl PgChainedRepository {
    /// A repository on `pool`.
    pub fn new(pool: PgPool) -> Self {
        PgChainedRepository {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }
}

/// SQLite: sqlite-es for reads, the chained append for writes.
pub struct SqliteChainedRepository {
    pool: SqlitePool,
    reads: SqliteEventRepository,
}

impl SqliteChainedRepository {
    /// A repository on `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        SqliteChainedRepository {
            reads: SqliteEventRepository::new(pool.clone()),
            pool,
        }
    }
}

macro_rules! delegate_reads {
    () => {
        async fn get_events<A: Aggregate>(
            &self,
            aggregate_id: &str,
        ) -> Result<Vec<SerializedEvent>, PersistenceError> {
            self.reads.get_events::<A>(aggregate_id).await
        }

        async fn get_last_events<A: Aggregate>(
            &self,
            aggregate_id: &str,
            last_sequence: usize,
        ) -> Result<Vec<SerializedEvent>, PersistenceError> {
            self.reads
                .get_last_events::<A>(aggregate_id, last_sequence)
                .await
        }

        async fn get_snapshot<A: Aggregate>(
            &self,
            aggregate_id: &str,
        ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
            self.reads.get_snapshot::<A>(aggregate_id).await
        }

        async fn stream_events<A: Aggregate>(
            &self,
            aggregate_id: &str,
        ) -> Result<ReplayStream, PersistenceError> {
            self.reads.stream_events::<A>(aggregate_id).await
        }

        async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
            self.reads.stream_all_events::<A>().await
        }
    };
}

fn check_batch(snapshot: &Option<(String, Value, usize)>) -> Result<(), PersistenceError> {
    if snapshot.is_some() {
        return Err(PersistenceError::UnknownError(
            "snapshots are not used: the event log is the only source of truth".into(),
        ));
    }
    Ok(())
}

impl PersistedEventRepository for PgChainedRepository {
    delegate_reads!();

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        check_batch(&snapshot_update)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let case_id = first.aggregate_id.as_str();
        let mut tx = self.pool.begin().await.map_err(persistence_error)?;
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_sequence, head_hash FROM case_heads WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(case_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(persistence_error)?;
        let prev = expect_head(first.sequence, head)?;
        let recorded_at = Utc::now().trunc_subsecs(6);
        let chained = chain_events(events, prev, &recorded_at_text(recorded_at));
        for e in &chained {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8, $9, $10)",
            )
            .bind(A::TYPE)
            .bind(case_id)
            .bind(e.sequence)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(&e.payload)
            .bind(&e.metadata)
            .bind(recorded_at)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        }
        let last = chained.last().expect("at least one event");
        let moved = sqlx::query(
            "INSERT INTO case_heads (aggregate_type, aggregate_id, last_sequence, head_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, head_hash = EXCLUDED.head_hash \
             WHERE case_heads.last_sequence = $5",
        )
        .bind(A::TYPE)
        .bind(case_id)
        .bind(last.sequence)
        .bind(&last.hash)
        .bind(first.sequence as i64 - 1)
        .execute(&mut *tx)
        .await
        .map_err(persistence_error)?;
        if moved.rows_affected() != 1 {
            return Err(PersistenceError::OptimisticLockError);
        }
        tx.commit().await.map_err(persistence_error)
    }
}

impl PersistedEventRepository for SqliteChainedRepository {
    delegate_reads!();

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        check_batch(&snapshot_update)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let case_id = first.aggregate_id.as_str();
        let mut conn = self.pool.acquire().await.map_err(persistence_error)?;
        // BEGIN IMMEDIATE: take the write lock before reading the head, so the read and the
        // append see the same database (a deferred transaction could fail to upgrade).
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(persistence_error)?;
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT last_sequence, head_hash FROM case_heads WHERE aggregate_type = ?1 AND aggregate_id = ?2",
        )
        .bind(A::TYPE)
        .bind(case_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(persistence_error)?;
        let prev = expect_head(first.sequence, head)?;
        let recorded_at = recorded_at_text(Utc::now().trunc_subsecs(6));
        let chained = chain_events(events, prev, &recorded_at);
        for e in &chained {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(A::TYPE)
            .bind(case_id)
            .bind(e.sequence)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(&e.payload)
            .bind(&e.metadata)
            .bind(&recorded_at)
            .bind(&e.prev_hash)
            .bind(&e.hash)
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        }
        let last = chained.last().expect("at least one event");
        let moved = sqlx::query(
            "INSERT INTO case_heads (aggregate_type, aggregate_id, last_sequence, head_hash) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = excluded.last_sequence, head_hash = excluded.head_hash \
             WHERE case_heads.last_sequence = ?5",
        )
        .bind(A::TYPE)
        .bind(case_id)
        .bind(last.sequence)
        .bind(&last.hash)
        .bind(first.sequence as i64 - 1)
        .execute(&mut *tx)
        .await
        .map_err(persistence_error)?;
        if moved.rows_affected() != 1 {
            return Err(PersistenceError::OptimisticLockError);
        }
        tx.commit().await.map_err(persistence_error)
    }
}

//! The append path with the hash chain: our `PersistedEventRepository` for each store. Snapshot
//! and stream reads go to postgres-es / sqlite-es unchanged; `persist` is ours, because every
//! appended event must be chained in the same transaction that stores it. On PostgreSQL the case
//! load is ours too: it notes the case's head, so that the append that follows is one statement.
//! On SQLite, commands use [`SqliteGroupRepository`], whose load and append run on the group
//! writer's connection inside its open transaction (`store::writer`).
//!
//! Invariants:
//! - Every writer appends through [`persist`](PersistedEventRepository::persist) here (on
//!   PostgreSQL, single events with a known predecessor through `pg_appends`), and every SQLite
//!   append through one function, `append_sqlite`; there is no other INSERT into `events`.
//! - An event is stored only together with its chain link and the case head it moves to: in one
//!   statement (PostgreSQL, one event whose predecessor is known: a row of the next group
//!   statement of `pg_appends`, inserted only if the stored head is that predecessor), in one
//!   transaction (PostgreSQL otherwise: read the head, insert,
//!   move the head) or in one savepoint (SQLite: insert, then move the head only from the head
//!   the events were chained to, read first unless it is known; the savepoint is rolled back
//!   when the head does not move). A head that moved meanwhile, or a sequence already taken, is
//!   an optimistic-lock conflict and nothing is written.
//! - A remembered head ([`HeadHints`], or a head moved earlier in the same SQLite group) is only
//!   ever a guess of what to chain to: the append itself checks it against the stored head.
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
use sqlx::{PgPool, SqliteConnection, SqlitePool};
use std::sync::Arc;

use super::pg_appends::{Appended, PgAppends, Row};

/// `recorded_at` as stored and hashed.
pub fn recorded_at_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The length of [`recorded_at_text`] for years 0–9999.
pub const RECORDED_AT_LEN: usize = 27;

/// [`recorded_at_text`] written into `buf` without allocating, for years 0–9999 (`None`
/// otherwise: use [`recorded_at_text`]). Verification formats a million of these.
pub fn recorded_at_into(t: DateTime<Utc>, buf: &mut [u8; RECORDED_AT_LEN]) -> Option<&str> {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    // A leap second shows as nanoseconds ≥ 1e9 in chrono, and as "60" seconds in `%S`; leave
    // that rare case to chrono.
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    put(20, 6, nanos / 1_000);
    buf[4] = b'-';
    buf[7] = b'-';
    buf[10] = b'T';
    buf[13] = b':';
    buf[16] = b':';
    buf[19] = b'.';
    buf[26] = b'Z';
    std::str::from_utf8(buf).ok()
}

/// [`persistence_error`] for one error shared by every append of a PostgreSQL group statement
/// (`pg_appends`): the database being unreachable stays a connection error, whatever it was.
pub(super) fn shared_persistence_error(err: &Arc<sqlx::Error>) -> PersistenceError {
    let unavailable = match err.as_ref() {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    };
    let shared = Box::new(SharedError(err.clone()));
    if unavailable {
        PersistenceError::ConnectionError(shared)
    } else {
        PersistenceError::UnknownError(shared)
    }
}

/// A database error reported to every caller of one group statement.
#[derive(Debug)]
struct SharedError(Arc<sqlx::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
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

/// The head (last sequence, hash) of recently loaded or appended cases, shared by the store and
/// its repository, so that the append that follows a load (or a cached state) needs no read of
/// its own. Only a hint: every append checks it against the stored head.
#[derive(Debug, Default)]
pub struct HeadHints(std::sync::Mutex<std::collections::HashMap<String, (usize, String)>>);

/// How many heads are remembered before the hints are emptied.
const HEAD_HINTS: usize = 10_000;

impl HeadHints {
    /// The head last seen for a case, if any.
    pub fn get(&self, case_id: &str) -> Option<(usize, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(case_id)
            .cloned()
    }

    /// Notes a case's head.
    pub fn remember(&self, case_id: &str, head: (usize, String)) {
        let mut heads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if heads.len() >= HEAD_HINTS {
            heads.clear();
        }
        heads.insert(case_id.to_string(), head);
    }

    /// Forgets a case's head (after a conflict).
    pub fn forget(&self, case_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(case_id);
    }
}

/// PostgreSQL: postgres-es for snapshots and streams, our own event read (which also notes the
/// case's head) and the chained append.
pub struct PgChainedRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
    /// The group appender of single events whose predecessor is known.
    appends: PgAppends,
    /// Heads seen by loads and appends.
    heads: std::sync::Arc<HeadHints>,
}

impl PgChainedRepository {
    /// A repository on `pool`, sharing `heads` with the store and appending single events
    /// through `appends`.
    pub(super) fn new(pool: PgPool, heads: std::sync::Arc<HeadHints>, appends: PgAppends) -> Self {
        PgChainedRepository {
            reads: PostgresEventRepository::new(pool.clone()),
            appends,
            pool,
            heads,
        }
    }

    /// The append of one event whose predecessor is known, in the store's next group statement
    /// (`pg_appends`): the event is inserted only if the stored head is the one it chains to, and
    /// the head moves with it, in the statement's one transaction.
    async fn append_one(
        &self,
        e: Chained,
        case_id: &str,
        recorded_at: DateTime<Utc>,
    ) -> Result<(), PersistenceError> {
        let (sequence, hash) = (e.sequence, e.hash.clone());
        let appended = self
            .appends
            .append(Row {
                case_id: case_id.to_string(),
                sequence: e.sequence,
                event_type: e.event_type,
                event_version: e.event_version,
                payload: e.payload,
                metadata: e.metadata,
                recorded_at,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .await?;
        match appended {
            Appended::Written => {
                self.heads.remember(case_id, (sequence as usize, hash));
                Ok(())
            }
            Appended::Conflict => {
                self.heads.forget(case_id);
                // The stored head is not the one this event chains to (or a unique key was
                // taken): nothing was written.
                Err(PersistenceError::OptimisticLockError)
            }
        }
    }
}

/// SQLite: sqlite-es for reads, the chained append for writes.
pub struct SqliteChainedRepository {
    pool: SqlitePool,
    reads: SqliteEventRepository,
    /// Heads appended, for the store's state cache.
    heads: std::sync::Arc<HeadHints>,
}

impl SqliteChainedRepository {
    /// A repository on `pool`.
    pub fn new(pool: SqlitePool, heads: std::sync::Arc<HeadHints>) -> Self {
        SqliteChainedRepository {
            reads: SqliteEventRepository::new(pool.clone()),
            pool,
            heads,
        }
    }
}

macro_rules! delegate_reads {
    () => {
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

    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        use futures_util::TryStreamExt;
        use sqlx::Row;
        let mut rows = sqlx::query(
            "SELECT sequence, event_type, event_version, payload, metadata, hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch(&self.pool);
        let mut events = Vec::new();
        let mut head = None;
        while let Some(row) = rows.try_next().await.map_err(persistence_error)? {
            let sequence: i64 = row.try_get(0).map_err(persistence_error)?;
            let hash: String = row.try_get(5).map_err(persistence_error)?;
            head = Some((sequence as usize, hash));
            events.push(SerializedEvent::new(
                aggregate_id.to_string(),
                sequence as usize,
                A::TYPE.to_string(),
                row.try_get(1).map_err(persistence_error)?,
                row.try_get(2).map_err(persistence_error)?,
                row.try_get(3).map_err(persistence_error)?,
                row.try_get(4).map_err(persistence_error)?,
            ));
        }
        if let Some(head) = head {
            self.heads.remember(aggregate_id, head);
        }
        Ok(events)
    }

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
        let hint = self.heads.get(case_id);
        let known_prev = match (first.sequence, &hint) {
            (1, _) => Some(chain::ZERO),
            (n, Some((last, hash))) if *last + 1 == n => chain::parse_hex(hash),
            _ => None,
        };
        // The group appender serves the one aggregate type the store holds.
        let grouped = A::TYPE == self.appends.aggregate_type();
        if let (Some(prev), [_], true) = (known_prev, events, grouped) {
            let recorded_at = Utc::now().trunc_subsecs(6);
            let chained = chain_events(events, prev, &recorded_at_text(recorded_at));
            let one = chained.into_iter().next().expect("one event chained");
            return self.append_one(one, case_id, recorded_at).await;
        }
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
        tx.commit().await.map_err(persistence_error)?;
        self.heads
            .remember(case_id, (last.sequence as usize, last.hash.clone()));
        Ok(())
    }
}

impl PersistedEventRepository for SqliteChainedRepository {
    delegate_reads!();

    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    /// An append in a transaction of its own. The server's commands do not come here: they
    /// append through [`SqliteGroupRepository`], inside the writer's group transaction.
    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        check_batch(&snapshot_update)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        let known = self.heads.get(&first.aggregate_id);
        let mut conn = self.pool.acquire().await.map_err(persistence_error)?;
        // BEGIN IMMEDIATE: take the write lock before reading the head, so the read and the
        // append see the same database (a deferred transaction could fail to upgrade).
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(persistence_error)?;
        // On an error the transaction is dropped, which rolls it back whole.
        let (case_id, head) = append_sqlite::<A>(&mut tx, events, known)
            .await
            .map_err(|(e, _)| e)?;
        tx.commit().await.map_err(persistence_error)?;
        self.heads.remember(&case_id, head);
        Ok(())
    }
}

/// The SQL of an append of `n` events: a savepoint, the events' inserts and the move of the
/// head, which returns a row only when the head was where the first event expects it.
///
/// Parameters: event `i` (from 0) takes `?(10i+1)`…`?(10i+10)` in the insert's column order;
/// then the case's type and id, the new last sequence and head hash, and the expected last
/// sequence and head hash.
fn append_sql(n: usize) -> String {
    let mut sql = String::from("SAVEPOINT append;\n");
    for i in 0..n {
        let p = |k: usize| format!("?{}", 10 * i + k);
        sql.push_str(&format!(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, prev_hash, hash) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {});\n",
            p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9), p(10)
        ));
    }
    let h = |k: usize| format!("?{}", 10 * n + k);
    sql.push_str(&format!(
        "INSERT INTO case_heads (aggregate_type, aggregate_id, last_sequence, head_hash) VALUES ({}, {}, {}, {}) \
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_sequence = excluded.last_sequence, head_hash = excluded.head_hash \
         WHERE case_heads.last_sequence = {} AND case_heads.head_hash = {} \
         RETURNING last_sequence",
        h(1), h(2), h(3), h(4), h(5), h(6)
    ));
    sql
}

/// The SQLite append on `conn`, inside the transaction the caller holds: the events are
/// chained to the case's head and inserted, and the head moves to the last of them, all in a
/// savepoint that is rolled back when anything fails. `known` is a head the caller believes
/// current (from a load or an earlier append); when its sequence is the one the events follow,
/// the head is not read first, and the move checks it instead: a head that is not the one
/// the events were chained to fails the append like a moved one.
///
/// Returns the case and its new head. The savepoint is left open on success (the enclosing
/// COMMIT keeps it). On failure it is rolled back, and the error comes with whether that
/// worked: if not, the transaction is in doubt and must be rolled back whole.
async fn append_sqlite<A: Aggregate>(
    conn: &mut SqliteConnection,
    events: &[SerializedEvent],
    known: Option<(usize, String)>,
) -> Result<(String, (usize, String)), (PersistenceError, bool)> {
    let first = events.first().ok_or_else(|| {
        (
            PersistenceError::UnknownError("an append of no events".into()),
            true,
        )
    })?;
    let case_id = first.aggregate_id.as_str();
    let expected = first.sequence as i64 - 1;
    let prev = match known {
        _ if expected == 0 => chain::ZERO,
        Some((last, hash)) if last as i64 == expected => {
            chain::parse_hex(&hash).ok_or_else(|| {
                (
                    PersistenceError::UnknownError(
                        "a remembered head hash is not SHA-256 hex".into(),
                    ),
                    true,
                )
            })?
        }
        _ => {
            let head: Option<(i64, String)> = sqlx::query_as(
                "SELECT last_sequence, head_hash FROM case_heads WHERE aggregate_type = ?1 AND aggregate_id = ?2",
            )
            .bind(A::TYPE)
            .bind(case_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| (persistence_error(e), true))?;
            expect_head(first.sequence, head).map_err(|e| (e, true))?
        }
    };
    let recorded_at = recorded_at_text(Utc::now().trunc_subsecs(6));
    let chained = chain_events(events, prev, &recorded_at);
    let last = chained.last().expect("at least one event");
    let sql = append_sql(chained.len());
    let mut query = sqlx::query(&sql);
    for e in &chained {
        query = query
            .bind(A::TYPE)
            .bind(case_id)
            .bind(e.sequence)
            .bind(&e.event_type)
            .bind(&e.event_version)
            .bind(&e.payload)
            .bind(&e.metadata)
            .bind(&recorded_at)
            .bind(&e.prev_hash)
            .bind(&e.hash);
    }
    let moved = query
        .bind(A::TYPE)
        .bind(case_id)
        .bind(last.sequence)
        .bind(&last.hash)
        .bind(expected)
        .bind(chain::hex(&prev))
        .fetch_all(&mut *conn)
        .await;
    match moved {
        Ok(rows) if rows.len() == 1 => Ok((
            case_id.to_string(),
            (last.sequence as usize, last.hash.clone()),
        )),
        outcome => {
            let error = match outcome {
                // The head was not the one the events were chained to.
                Ok(_) => PersistenceError::OptimisticLockError,
                Err(e) => persistence_error(e),
            };
            let undone = sqlx::query("ROLLBACK TO append; RELEASE append")
                .execute(&mut *conn)
                .await
                .is_ok();
            Err((error, undone))
        }
    }
}

/// The group-commit writer's connection, shared by the writer (which begins and commits the
/// group's transaction on it) and its repository.
pub type SharedConnection = std::sync::Arc<tokio::sync::Mutex<SqliteConnection>>;

/// What the writer's repository and the group transaction it appends in share.
#[derive(Debug, Default)]
pub struct GroupAppends {
    /// Each case's head as the group's appends left it (not committed yet).
    pub heads: std::collections::HashMap<String, (usize, String)>,
    /// Set when a failed append could not be undone: the transaction is in doubt.
    pub in_doubt: Option<String>,
}

/// [`GroupAppends`], shared.
pub type SharedAppends = std::sync::Arc<std::sync::Mutex<GroupAppends>>;

/// SQLite inside the writer's group transaction: the case load and the append both run on the
/// writer's connection, so a command sees what earlier commands of its group wrote and has not
/// been committed yet. It never begins or commits: the writer does, around the whole group.
pub struct SqliteGroupRepository {
    conn: SharedConnection,
    /// For the cqrs-es reads that `new_event_store` never makes (snapshots, streams): they read
    /// committed rows through the pool.
    reads: SqliteEventRepository,
    /// The group's heads, and whether its transaction is in doubt.
    group: SharedAppends,
    /// Heads of committed appends, shared with the store.
    hints: std::sync::Arc<HeadHints>,
}

impl SqliteGroupRepository {
    /// A repository on the writer's connection.
    pub fn new(
        conn: SharedConnection,
        pool: SqlitePool,
        group: SharedAppends,
        hints: std::sync::Arc<HeadHints>,
    ) -> Self {
        SqliteGroupRepository {
            conn,
            reads: SqliteEventRepository::new(pool),
            group,
            hints,
        }
    }
}

impl PersistedEventRepository for SqliteGroupRepository {
    delegate_reads!();

    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        use sqlx::Row;
        let mut conn = self.conn.lock().await;
        let rows = sqlx::query(
            "SELECT sequence, event_type, event_version, payload, metadata FROM events \
             WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(persistence_error)?;
        rows.iter()
            .map(|row| {
                let sequence: i64 = row.try_get(0).map_err(persistence_error)?;
                Ok(SerializedEvent::new(
                    aggregate_id.to_string(),
                    sequence as usize,
                    A::TYPE.to_string(),
                    row.try_get(1).map_err(persistence_error)?,
                    row.try_get(2).map_err(persistence_error)?,
                    row.try_get(3).map_err(persistence_error)?,
                    row.try_get(4).map_err(persistence_error)?,
                ))
            })
            .collect()
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        check_batch(&snapshot_update)?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        // The group's own head first: the committed hint is older when the group moved it.
        let known = {
            let group = self.group.lock().unwrap_or_else(|p| p.into_inner());
            group.heads.get(&first.aggregate_id).cloned()
        }
        .or_else(|| self.hints.get(&first.aggregate_id));
        let mut conn = self.conn.lock().await;
        let appended = append_sqlite::<A>(&mut conn, events, known).await;
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        match appended {
            Ok((case_id, head)) => {
                group.heads.insert(case_id, head);
                Ok(())
            }
            Err((e, undone)) => {
                if !undone {
                    group
                        .in_doubt
                        .get_or_insert_with(|| format!("a failed append could not be undone: {e}"));
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

    #[test]
    fn the_fast_recorded_at_writer_agrees_with_the_stored_format() {
        let mut buf = [0u8; RECORDED_AT_LEN];
        let mut t = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
        let step = chrono::Duration::microseconds(7_777_777_777_777);
        while t.year() < 9999 {
            assert_eq!(
                recorded_at_into(t, &mut buf),
                Some(recorded_at_text(t).as_str())
            );
            t += step;
        }
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap()
                + chrono::Duration::microseconds(999_999),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        ] {
            assert_eq!(
                recorded_at_into(t, &mut buf),
                Some(recorded_at_text(t).as_str())
            );
        }
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(recorded_at_into(far, &mut buf), None);
    }
}

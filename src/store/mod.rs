//! The event store: PostgreSQL through postgres-es and SQLite through sqlite-es, behind one type.
//!
//! Role: load a case by folding its own events, run a command against it and append the one
//! event it records, and read the stored log back (history, idempotent replays).
//!
//! Invariants:
//! - The append goes through cqrs-es's `PersistedEventStore::new_event_store` (no snapshots, so
//!   events are never applied twice) and the repositories' own insert.
//! - A lost race for a case's next sequence, a case number or an idempotency key surfaces as a
//!   unique violation of the append itself; nothing is checked-then-written.
//! - Case numbers count gapless per room and year in commit order: one filing per series at a
//!   time in this process (on SQLite, one command at a time: the writer), and the unique index
//!   catches another process's filing.
//! - A command runs on its own task (PostgreSQL: a spawned one; SQLite: the group writer), so a
//!   client that goes away mid-request cannot cancel it half-way and leave a connection inside a
//!   transaction.
//! - On SQLite every command is answered only after the group transaction that holds it has
//!   committed, and the caches learn only committed writes (see `writer`).
//! - The database being unreachable is [`StoreError::Unavailable`], never a panic.

/// Runs `$body` with `$pool` bound to whichever pool the store has.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.inner.backend {
            Backend::Postgres { pool: $pool, .. } => $body,
            Backend::Sqlite { pool: $pool, .. } => $body,
        }
    };
}

pub mod bulk;
mod coalesce;
mod head_reads;
pub mod migrations;
mod pg_appends;
pub mod pgcopy;
pub mod read_models;
pub mod repository;
pub mod writer;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiaojie_domain::{Case, CaseCommand, CaseError, CaseEvent};
use uuid::Uuid;

use crate::audit::chain::ChainedEvent;
pub use pg_appends::PgGroupStats;
use repository::{HeadHints, PgChainedRepository, SqliteChainedRepository};
pub use writer::GroupCommitStats;

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The configuration names no usable database.
    #[error("{0}")]
    Config(String),
    /// Something else went wrong in the database.
    #[error("database error: {0}")]
    Database(String),
}

/// Who asked for a command, and under which request; goes into every event's metadata.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    /// The token's `sub`.
    pub sub: String,
    /// The token's role.
    pub role: String,
    /// The request id (from `X-Request-Id` or generated).
    pub request_id: String,
    /// The idempotency key, scoped to the caller, and a hash of the request it came with.
    pub idempotency: Option<Idempotency>,
}

/// An idempotency key as stored: unique across the log.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The caller's key, prefixed with the caller's `sub` so two callers never collide.
    pub key: String,
    /// A hash of method, path and body: the same key with another request is refused.
    pub request_hash: String,
}

/// Why a command did not record an event.
#[derive(Debug)]
pub enum ExecuteError<E> {
    /// The caller's own check refused it (authorization, body, `If-Match`).
    Rejected(E),
    /// The domain refused it.
    Domain(CaseError),
    /// Another write to the case won the race.
    Conflict,
    /// The idempotency key was used before with another request.
    KeyReused,
    /// The store failed.
    Store(StoreError),
}

/// A command's result: the case after it.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The case after the command's event (or, for a replay, after the first request's event).
    pub case: Case,
    /// Whether this answer replays an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// One stored event with what the store adds to it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The case.
    pub case_id: String,
    /// The event's number within its case, from 1.
    pub sequence: i64,
    /// The stable type name.
    pub event_type: String,
    /// The payload version.
    pub event_version: String,
    /// The payload exactly as stored.
    pub payload: Value,
    /// Actor and request, as stored.
    pub metadata: Value,
    /// When the store recorded it, exactly as stored and hashed (`…T…:…:….ffffffZ`).
    pub recorded_at: String,
    /// The insertion number in the whole log.
    pub position: i64,
    /// The previous event's hash (hex; zeros for the first).
    pub prev_hash: String,
    /// This event's hash (hex).
    pub hash: String,
}

impl StoredEvent {
    /// The event as the chain verifier reads it.
    pub fn chained(&self) -> ChainedEvent {
        ChainedEvent {
            sequence: self.sequence.max(0) as u64,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            recorded_at: self.recorded_at.clone(),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        }
    }
}

/// One event as verification reads it, borrowed from its row: payload and metadata as their
/// stored JSON texts.
#[derive(Debug, Clone, Copy)]
pub struct ChainRow<'a> {
    /// The case.
    pub case_id: &'a str,
    /// The event's number within its case.
    pub sequence: i64,
    /// The stable type name.
    pub event_type: &'a str,
    /// The payload version.
    pub event_version: &'a str,
    /// The payload's stored JSON text.
    pub payload: &'a str,
    /// Actor and request: the stored JSON text.
    pub metadata: &'a str,
    /// When recorded, as stored and hashed.
    pub recorded_at: &'a str,
    /// The stored previous hash (hex).
    pub prev_hash: &'a str,
    /// The stored hash (hex).
    pub hash: &'a str,
}

/// A batch of undecoded rows from [`Store::chain_batches`], in no particular order.
pub enum ChainRows {
    /// Whole tuples of PostgreSQL's binary COPY format ([`pgcopy`]), the columns of
    /// [`Store::chain_batches`]'s query.
    PostgresCopy(Vec<u8>),
    /// SQLite rows.
    Sqlite(Vec<sqlx::sqlite::SqliteRow>),
}

impl ChainRows {
    /// Hands each row, decoded without copying, to `visit` in order; stops at the first error.
    pub fn for_each(
        &self,
        mut visit: impl FnMut(ChainRow<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            ChainRows::PostgresCopy(batch) => {
                let mut buf = [0u8; repository::RECORDED_AT_LEN];
                pgcopy::for_each_tuple::<9>(batch, |f| {
                    let at = pgcopy::timestamptz(f[6])?;
                    let owned;
                    let recorded_at = match repository::recorded_at_into(at, &mut buf) {
                        Some(text) => text,
                        None => {
                            owned = repository::recorded_at_text(at);
                            owned.as_str()
                        }
                    };
                    visit(ChainRow {
                        case_id: pgcopy::text(f[0])?,
                        sequence: pgcopy::int8(f[1])?,
                        event_type: pgcopy::text(f[2])?,
                        event_version: pgcopy::text(f[3])?,
                        payload: pgcopy::text(f[4])?,
                        metadata: pgcopy::text(f[5])?,
                        recorded_at,
                        prev_hash: pgcopy::text(f[7])?,
                        hash: pgcopy::text(f[8])?,
                    })
                })?;
            }
            ChainRows::Sqlite(rows) => {
                for row in rows {
                    visit(ChainRow {
                        case_id: row.try_get(0).map_err(db_error)?,
                        sequence: row.try_get(1).map_err(db_error)?,
                        event_type: row.try_get(2).map_err(db_error)?,
                        event_version: row.try_get(3).map_err(db_error)?,
                        payload: row.try_get(4).map_err(db_error)?,
                        metadata: row.try_get(5).map_err(db_error)?,
                        recorded_at: row.try_get(6).map_err(db_error)?,
                        prev_hash: row.try_get(7).map_err(db_error)?,
                        hash: row.try_get(8).map_err(db_error)?,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// A case's recorded head: its last sequence and that event's hash.
pub type Head = (u64, String);

const PG_COLUMNS: &str = "aggregate_id, sequence, event_type, event_version, payload, metadata, \
    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at, position, prev_hash, hash";
const SQLITE_COLUMNS: &str =
    "aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at, position, prev_hash, hash";

/// How to size and time the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Largest number of connections.
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

type PgEvents = PersistedEventStore<PgChainedRepository, Case>;

enum Backend {
    Postgres {
        pool: PgPool,
        events: Arc<PgEvents>,
        /// The coalesced head lookups of cached case reads.
        head_reads: head_reads::HeadReads,
        /// The group appender the repository writes single events through (kept for its stats).
        appends: pg_appends::PgAppends,
    },
    Sqlite {
        pool: SqlitePool,
        /// For reads only (case loads, replays of committed keys): every SQLite command runs
        /// in the writer's group transaction.
        events: Arc<PersistedEventStore<SqliteChainedRepository, Case>>,
        writer: writer::Writer,
    },
}

/// Last used number per case-number series (`R01-2026`), `None` until read from the log.
type SeriesSlot = Arc<tokio::sync::Mutex<Option<u32>>>;

struct Inner {
    backend: Backend,
    /// PostgreSQL's case-number series (SQLite's writer keeps its own, as it alone files).
    series: Mutex<HashMap<String, SeriesSlot>>,
    /// Signalled after every append of this process, so the projector need not wait for a poll.
    appended: tokio::sync::Notify,
    /// Heads of recently loaded or appended cases (shared with the repository).
    heads: Arc<HeadHints>,
    /// Recently folded cases. A cached case is used only while the stored head still has its
    /// version: commands check that in the append itself, reads with one key lookup.
    states: Mutex<HashMap<String, Case>>,
}

/// How many folded cases are kept before the cache is emptied.
const CACHED_STATES: usize = 10_000;

/// The event store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How many times a filing retries after another process took its case number.
const NUMBERING_ATTEMPTS: usize = 50;

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` (creating the SQLite file and its folder).
    /// Fails with a one-line message when the database cannot be reached.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Store, StoreError> {
        let heads = Arc::new(HeadHints::default());
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
            let target = format!(
                "{}:{}/{}",
                opts.get_host(),
                opts.get_port(),
                opts.get_database().unwrap_or("postgres")
            );
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                // A broken connection fails its query and is discarded; a ping before every
                // use would add a round trip to each command.
                .test_before_acquire(false)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot reach PostgreSQL at {target}: {e}"))
                })?;
            let appends = pg_appends::PgAppends::new(pool.clone(), Case::TYPE);
            let events = Arc::new(PersistedEventStore::new_event_store(
                PgChainedRepository::new(pool.clone(), heads.clone(), appends.clone()),
            ));
            let head_reads = head_reads::HeadReads::new(pool.clone(), Case::TYPE);
            Backend::Postgres {
                pool,
                events,
                head_reads,
                appends,
            }
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config("the SQLite URL names no file".into()));
            }
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Config(format!("cannot create folder {}: {e}", dir.display()))
                    })?;
                }
            }
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged write survives a power cut, not only a crash.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.max_connections.min(8))
                .test_before_acquire(false)
                .acquire_timeout(settings.acquire_timeout)
                .connect_with(opts.clone())
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot open SQLite file {path}: {e}"))
                })?;
            let events = Arc::new(PersistedEventStore::new_event_store(
                SqliteChainedRepository::new(pool.clone(), heads.clone()),
            ));
            // Commands write through one connection of their own, in groups (`writer`).
            let writer =
                writer::Writer::start(opts, pool.clone(), heads.clone(), settings.acquire_timeout);
            Backend::Sqlite {
                pool,
                events,
                writer,
            }
        } else {
            return Err(StoreError::Config(
                "TIAOJIE_DATABASE_URL must start with postgres:// or sqlite://".into(),
            ));
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                series: Mutex::new(HashMap::new()),
                appended: tokio::sync::Notify::new(),
                heads,
                states: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Completes at the next append made by this process.
    pub async fn appended(&self) {
        self.inner.appended.notified().await
    }

    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match &self.inner.backend {
            Backend::Postgres { .. } => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        const TABLE: &str = "CREATE TABLE IF NOT EXISTS tiaojie_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL)";
        let (list, lock) = match &self.inner.backend {
            // One replica migrates at a time; the others wait here, then find nothing to do.
            Backend::Postgres { .. } => (
                migrations::POSTGRES,
                Some("SELECT pg_advisory_xact_lock(7402201)"),
            ),
            Backend::Sqlite { .. } => (migrations::SQLITE, None),
        };
        let applied = self.sql("SELECT version FROM tiaojie_migrations WHERE version = $1");
        let record =
            self.sql("INSERT INTO tiaojie_migrations (version, description) VALUES ($1, $2)");
        with_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(db_error)?;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await.map_err(db_error)?;
            }
            sqlx::query(TABLE).execute(&mut *tx).await.map_err(db_error)?;
            for (version, description, sql) in list {
                let done: Option<i64> = sqlx::query_scalar(&applied)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if done.is_none() {
                    // `{s}` names the live read-model tables (see `read_model_tables`).
                    let sql = sql.replace("{s}", "");
                    sqlx::raw_sql(&sql).execute(&mut *tx).await.map_err(db_error)?;
                    sqlx::query(&record)
                        .bind(version)
                        .bind(description)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
            }
            tx.commit().await.map_err(db_error)?;
        });
        Ok(())
    }

    /// Whether the database answers and every migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let latest = match &self.inner.backend {
            Backend::Postgres { .. } => migrations::POSTGRES.last(),
            Backend::Sqlite { .. } => migrations::SQLITE.last(),
        }
        .map(|m| m.0)
        .unwrap_or(0);
        let sql = "SELECT COALESCE(MAX(version), 0) FROM tiaojie_migrations";
        let applied: i64 = match &self.inner.backend {
            Backend::Postgres { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await,
            Backend::Sqlite { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .map_err(db_error)?;
        if applied < latest {
            return Err(StoreError::Database(format!(
                "migrations applied up to {applied}, this build needs {latest}"
            )));
        }
        if let Backend::Sqlite { writer, .. } = &self.inner.backend {
            if !writer.alive() {
                return Err(StoreError::Database(
                    "the SQLite writer has stopped: commands cannot be recorded".into(),
                ));
            }
        }
        Ok(())
    }

    /// The case as its events show it now (`Case::default()` when it has none).
    pub async fn load(&self, case_id: Uuid) -> Result<Case, StoreError> {
        let id = case_id.to_string();
        let this = self.clone();
        spawn(async move {
            if let Some(cached) = this.cached(&id) {
                // The cached fold is the case only while the stored head is still its last event.
                if this.stored_head_sequence(&id).await? == Some(cached.version) {
                    return Ok(cached);
                }
            }
            let result = match &this.inner.backend {
                Backend::Postgres { events, .. } => events.load_aggregate(&id).await,
                Backend::Sqlite { events, .. } => events.load_aggregate(&id).await,
            };
            let case = result.map(|ctx| ctx.aggregate).map_err(aggregate_error)?;
            this.cache(&id, &case);
            Ok(case)
        })
        .await
    }

    fn cached(&self, id: &str) -> Option<Case> {
        self.inner
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn cache(&self, id: &str, case: &Case) {
        if case.file.is_none() {
            return;
        }
        let mut states = self.inner.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() >= CACHED_STATES {
            states.clear();
        }
        states.insert(id.to_string(), case.clone());
    }

    fn uncache(&self, id: &str) {
        self.inner
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.inner.heads.forget(id);
    }

    /// The last sequence the store's head records for a case.
    async fn stored_head_sequence(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let found: Option<i64> = match &self.inner.backend {
            Backend::Postgres { head_reads, .. } => head_reads.last_sequence(id).await?,
            Backend::Sqlite { pool, .. } => sqlx::query_scalar(
                "SELECT last_sequence FROM case_heads WHERE aggregate_type = ?1 AND aggregate_id = ?2",
            )
            .bind(Case::TYPE)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?,
        };
        Ok(found.map(|s| s.max(0) as u64))
    }

    /// The cached state of a case to run a command against, when its head is known too (so the
    /// append can chain without reading); the append itself checks it is still current.
    fn command_state(
        &self,
        id: &str,
    ) -> Option<cqrs_es::persist::EventStoreAggregateContext<Case>> {
        let case = self.cached(id)?;
        let (sequence, _) = self.inner.heads.get(id)?;
        (sequence as u64 == case.version).then(|| cqrs_es::persist::EventStoreAggregateContext {
            aggregate_id: id.to_string(),
            current_sequence: sequence,
            aggregate: case,
            current_snapshot: None,
        })
    }

    /// Runs a command against a case and appends its event.
    ///
    /// `build` sees the case as loaded (and, for a filing, the case number the store reserved in
    /// `numbering`'s series) and returns the command or its own refusal; it may run more than once
    /// when a filing has to take the next number. `numbering` is given only with a filing, whose
    /// `case_id` the caller has just minted: that case is not read first (`unread_state`). The
    /// whole run happens on a task of its own: on PostgreSQL a spawned one, on SQLite the writer,
    /// which runs it in a group transaction and answers once the group has committed (`writer`).
    pub async fn execute<E, F>(
        &self,
        case_id: Uuid,
        numbering: Option<String>,
        meta: CommandMeta,
        build: F,
    ) -> Result<Executed, ExecuteError<E>>
    where
        E: Send + 'static,
        F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Send + Sync + 'static,
    {
        let (pool, events) = match &self.inner.backend {
            Backend::Sqlite { writer, .. } => {
                return writer.execute(self, case_id, numbering, meta, build).await
            }
            Backend::Postgres { pool, events, .. } => (pool.clone(), events.clone()),
        };
        let this = self.clone();
        match tokio::spawn(async move {
            this.execute_postgres(&pool, &events, case_id, numbering, meta, build)
                .await
        })
        .await
        {
            Ok(result) => result,
            Err(e) => Err(ExecuteError::Store(StoreError::Database(format!(
                "command task failed: {e}"
            )))),
        }
    }

    /// What the group appender has done so far, on PostgreSQL (`None` on SQLite, whose writer
    /// reports [`group_commit_stats`](Self::group_commit_stats)).
    pub fn pg_group_stats(&self) -> Option<PgGroupStats> {
        match &self.inner.backend {
            Backend::Postgres { appends, .. } => Some(appends.stats()),
            Backend::Sqlite { .. } => None,
        }
    }

    /// What the writer has done so far, on SQLite (`None` on PostgreSQL, which has no writer).
    pub fn group_commit_stats(&self) -> Option<GroupCommitStats> {
        match &self.inner.backend {
            Backend::Sqlite { writer, .. } => Some(writer.stats()),
            Backend::Postgres { .. } => None,
        }
    }

    async fn execute_postgres<E, F>(
        &self,
        pool: &PgPool,
        events: &PgEvents,
        case_id: Uuid,
        numbering: Option<String>,
        meta: CommandMeta,
        build: F,
    ) -> Result<Executed, ExecuteError<E>>
    where
        F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Sync,
    {
        if let Some(idem) = &meta.idempotency {
            if let Some(replay) = self
                .replay(pool, events, idem)
                .await
                .map_err(ExecuteError::Store)?
            {
                return replay;
            }
        }
        let metadata = command_metadata(&meta);
        let id = case_id.to_string();
        let slot = numbering.as_ref().map(|series| self.series_slot(series));
        let mut retried_stale = false;
        for _ in 0..NUMBERING_ATTEMPTS {
            let mut guard = match &slot {
                Some(slot) => Some(slot.clone().lock_owned().await),
                None => None,
            };
            let number = match (&mut guard, &numbering) {
                (Some(guard), Some(series)) => {
                    let last = match **guard {
                        Some(last) => last,
                        None => last_number(pool, series)
                            .await
                            .map_err(ExecuteError::Store)?,
                    };
                    **guard = Some(last);
                    Some(last + 1)
                }
                _ => None,
            };
            let (cached, from_cache) = unread_state(&id, number, || self.command_state(&id));
            match run(events, &id, cached, number, &build, metadata.clone()).await {
                Ok(case) => {
                    if let Some(guard) = &mut guard {
                        **guard = number;
                    }
                    self.cache(&id, &case);
                    self.inner.appended.notify_waiters();
                    return Ok(Executed {
                        case,
                        replayed: false,
                    });
                }
                Err(RunError::Rejected(e)) => return Err(ExecuteError::Rejected(e)),
                Err(RunError::Domain(e)) => return Err(ExecuteError::Domain(e)),
                Err(RunError::Store(e)) => return Err(ExecuteError::Store(e)),
                Err(RunError::Conflict) => {
                    self.uncache(&id);
                    if from_cache && !retried_stale {
                        // The cached state was stale (another process wrote): decide again on
                        // the case as it is now.
                        retried_stale = true;
                        continue;
                    }
                    if let Some(idem) = &meta.idempotency {
                        if let Some(replay) = self
                            .replay(pool, events, idem)
                            .await
                            .map_err(ExecuteError::Store)?
                        {
                            return replay;
                        }
                    }
                    match &mut guard {
                        // Another process filed with this number: read the series again.
                        Some(guard) => **guard = None,
                        None => return Err(ExecuteError::Conflict),
                    }
                }
            }
        }
        Err(ExecuteError::Conflict)
    }

    fn series_slot(&self, series: &str) -> SeriesSlot {
        let mut map = self.inner.series.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(series.to_string()).or_default().clone()
    }

    /// The earlier answer for an idempotency key on PostgreSQL, if the key was used: the case
    /// after the first request's event, or `KeyReused` when the key came with another request.
    async fn replay<E>(
        &self,
        pool: &PgPool,
        events: &PgEvents,
        idem: &Idempotency,
    ) -> Result<Option<Result<Executed, ExecuteError<E>>>, StoreError> {
        let row = sqlx::query(
            "SELECT aggregate_id, sequence, metadata->>'request_hash' AS request_hash FROM events \
             WHERE metadata->>'idempotency_key' = $1",
        )
        .bind(&idem.key)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<Option<String>, _>(2),
            )
        });
        key_answer(events, row, idem).await
    }

    /// The case after its first `n` events.
    pub async fn load_first(&self, case_id: &str, n: u64) -> Result<Case, StoreError> {
        let envelopes = match &self.inner.backend {
            Backend::Postgres { events, .. } => events.load_events(case_id).await,
            Backend::Sqlite { events, .. } => events.load_events(case_id).await,
        }
        .map_err(aggregate_error)?;
        Ok(fold_first(envelopes, n))
    }

    /// A case's stored events in sequence order, with what the store added.
    pub async fn history(&self, case_id: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
        let id = case_id.to_string();
        let this = self.clone();
        spawn(async move { this.case_events(&id).await }).await
    }

    async fn case_events(&self, id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => {
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
                );
                let rows = sqlx::query(&sql)
                    .bind(Case::TYPE)
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(stored_event_pg).collect()
            }
            Backend::Sqlite { pool, .. } => {
                let sql = format!(
                    "SELECT {SQLITE_COLUMNS} FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 ORDER BY sequence"
                );
                let rows = sqlx::query(&sql)
                    .bind(Case::TYPE)
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(stored_event_sqlite).collect()
            }
        }
    }

    /// A case's events and its recorded head, for verification.
    pub async fn case_chain(
        &self,
        case_id: &str,
    ) -> Result<(Vec<StoredEvent>, Option<Head>), StoreError> {
        let events = self.case_events(case_id).await?;
        let head: Option<(i64, String)> = match &self.inner.backend {
            Backend::Postgres { pool, .. } => sqlx::query_as(
                "SELECT last_sequence, head_hash FROM case_heads WHERE aggregate_type = $1 AND aggregate_id = $2",
            )
            .bind(Case::TYPE)
            .bind(case_id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?,
            Backend::Sqlite { pool, .. } => sqlx::query_as(
                "SELECT last_sequence, head_hash FROM case_heads WHERE aggregate_type = ?1 AND aggregate_id = ?2",
            )
            .bind(Case::TYPE)
            .bind(case_id)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?,
        };
        Ok((events, head.map(|(s, h)| (s.max(0) as u64, h))))
    }

    /// Every case's recorded head.
    pub async fn heads(&self) -> Result<HashMap<String, Head>, StoreError> {
        let sql = "SELECT aggregate_id, last_sequence, head_hash FROM case_heads";
        let rows: Vec<(String, i64, String)> = match &self.inner.backend {
            Backend::Postgres { pool, .. } => sqlx::query_as(sql).fetch_all(pool).await,
            Backend::Sqlite { pool, .. } => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, s, h)| (id, (s.max(0) as u64, h)))
            .collect())
    }

    /// Every event, ordered by case and sequence, handed to `visit` one case at a time.
    pub async fn for_each_case(
        &self,
        mut visit: impl FnMut(&str, Vec<StoredEvent>) + Send,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        let mut current: Option<String> = None;
        let mut batch: Vec<StoredEvent> = Vec::new();
        let mut push = |e: StoredEvent, visit: &mut dyn FnMut(&str, Vec<StoredEvent>)| {
            if current.as_deref() != Some(e.case_id.as_str()) {
                if let Some(id) = current.take() {
                    visit(&id, std::mem::take(&mut batch));
                }
                current = Some(e.case_id.clone());
            }
            batch.push(e);
        };
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => {
                let sql = format!("SELECT {PG_COLUMNS} FROM events ORDER BY aggregate_type, aggregate_id, sequence");
                let mut rows = sqlx::query(&sql).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(db_error)? {
                    push(stored_event_pg(&row)?, &mut visit);
                }
            }
            Backend::Sqlite { pool, .. } => {
                let sql = format!("SELECT {SQLITE_COLUMNS} FROM events ORDER BY aggregate_type, aggregate_id, sequence");
                let mut rows = sqlx::query(&sql).fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(db_error)? {
                    push(stored_event_sqlite(&row)?, &mut visit);
                }
            }
        }
        if let Some(id) = current.take() {
            visit(&id, std::mem::take(&mut batch));
        }
        Ok(())
    }

    /// Every event, in table order (a sequential scan: ordering by case would make the database
    /// walk an index and fetch the rows at random, several times slower), as undecoded rows in
    /// batches of up to `CHAIN_BATCH`, for verification, sent to `tx`; stops early when its receiver is gone.
    /// Payload and metadata are read as their stored texts (`payload::text` on PostgreSQL,
    /// whose `json` type keeps the text verbatim); see [`ChainRows::for_each`].
    pub async fn chain_batches(
        &self,
        tx: tokio::sync::mpsc::Sender<ChainRows>,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        const CHAIN_BATCH: usize = 1024;
        /// About a thousand events' worth of COPY data per batch.
        const COPY_BATCH_BYTES: usize = 768 * 1024;
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => {
                use sqlx::postgres::PgPoolCopyExt;
                let mut chunks = pool
                    .copy_out_raw(
                        "COPY (SELECT aggregate_id, sequence, event_type, event_version, payload::text, \
                         metadata::text, recorded_at, prev_hash, hash FROM events) TO STDOUT WITH (FORMAT binary)",
                    )
                    .await
                    .map_err(db_error)?;
                let mut splitter = pgcopy::Splitter::default();
                while let Some(chunk) = chunks.try_next().await.map_err(db_error)? {
                    if let Some(batch) = splitter.push(&chunk, COPY_BATCH_BYTES)? {
                        if tx.send(ChainRows::PostgresCopy(batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                // A closed receiver has stopped on its own; nothing more to tell it.
                let _ = tx.send(ChainRows::PostgresCopy(splitter.finish()?)).await;
                return Ok(());
            }
            Backend::Sqlite { pool, .. } => {
                let sql =
                    "SELECT aggregate_id, sequence, event_type, event_version, payload, metadata, \
                    recorded_at, prev_hash, hash FROM events";
                let mut rows = sqlx::query(sql).fetch(pool);
                let mut batch = Vec::with_capacity(CHAIN_BATCH);
                while let Some(row) = rows.try_next().await.map_err(db_error)? {
                    batch.push(row);
                    if batch.len() == CHAIN_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(CHAIN_BATCH));
                        if tx.send(ChainRows::Sqlite(full)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if !batch.is_empty() {
                    // A closed receiver has stopped on its own; nothing more to tell it.
                    let _ = tx.send(ChainRows::Sqlite(batch)).await;
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` events after the event at position `after` (from the start when `None`), in
    /// log order: the order in which they became final. On SQLite, where writes are serialized,
    /// that is position order. On PostgreSQL it is the order of the writing transactions' ids,
    /// and only transactions older than every one still in flight are read, so an event never
    /// appears in front of one already read: no event is skipped or repeated across pages.
    pub async fn read_log(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => {
                let sql = log_page_sql(after.is_some());
                let query = match after {
                    Some(after) => sqlx::query(&sql).bind(after).bind(limit),
                    None => sqlx::query(&sql).bind(limit),
                };
                let rows = query.fetch_all(pool).await.map_err(db_error)?;
                rows.iter().map(stored_event_pg).collect()
            }
            Backend::Sqlite { pool, .. } => {
                let sql = format!(
                    "SELECT {SQLITE_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
                );
                let rows = sqlx::query(&sql)
                    .bind(after.unwrap_or(0))
                    .bind(limit)
                    .fetch_all(pool)
                    .await
                    .map_err(db_error)?;
                rows.iter().map(stored_event_sqlite).collect()
            }
        }
    }

    /// The position of the last final event in log order (0 when the log is empty).
    pub async fn read_log_last_position(&self) -> Result<i64, StoreError> {
        let found: Option<i64> = match &self.inner.backend {
            Backend::Postgres { pool, .. } => sqlx::query_scalar(
                "SELECT position FROM events WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY txid DESC, position DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await,
            Backend::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT MAX(position) FROM events")
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(db_error)?;
        Ok(found.unwrap_or(0))
    }

    /// Whether an event with this position exists (in flight or final).
    pub async fn position_exists(&self, position: i64) -> Result<bool, StoreError> {
        let n: i64 = match &self.inner.backend {
            Backend::Postgres { pool, .. } => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE position = $1")
                    .bind(position)
                    .fetch_one(pool)
                    .await
            }
            Backend::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE position = ?1")
                    .bind(position)
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(db_error)?;
        Ok(n > 0)
    }

    /// The PostgreSQL pool, when that is the backend (for tests and tools that inspect the log).
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => Some(pool),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The SQLite pool, when that is the backend.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.inner.backend {
            Backend::Sqlite { pool, .. } => Some(pool),
            Backend::Postgres { .. } => None,
        }
    }

    /// Closes the pool, waiting for connections in use to come back. On SQLite the writer
    /// first answers the commands already queued and closes its connection; later commands are
    /// answered `Unavailable`.
    pub async fn close(&self) {
        match &self.inner.backend {
            Backend::Postgres { pool, .. } => pool.close().await,
            Backend::Sqlite { pool, writer, .. } => {
                writer.close().await;
                pool.close().await
            }
        }
    }
}

/// The highest case number used so far in a PostgreSQL series (`R01-2026`), 0 if none.
async fn last_number(pool: &PgPool, series: &str) -> Result<u32, StoreError> {
    let n: Option<i32> = sqlx::query_scalar(
        "SELECT MAX(split_part(payload->'CaseFiled'->>'case_no', '-', 3)::int) FROM events \
         WHERE event_type = 'CaseFiled' AND \
         split_part(payload->'CaseFiled'->>'case_no', '-', 1) || '-' || split_part(payload->'CaseFiled'->>'case_no', '-', 2) = $1",
    )
    .bind(series)
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    Ok(n.unwrap_or(0).max(0) as u32)
}

/// The metadata every event of a command carries.
fn command_metadata(meta: &CommandMeta) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        ("sub".to_string(), meta.sub.clone()),
        ("role".to_string(), meta.role.clone()),
        ("request_id".to_string(), meta.request_id.clone()),
    ]);
    if let Some(idem) = &meta.idempotency {
        metadata.insert("idempotency_key".into(), idem.key.clone());
        metadata.insert("request_hash".into(), idem.request_hash.clone());
    }
    metadata
}

/// What the log says about an idempotency key.
enum KeyUse {
    /// Never used.
    New,
    /// Used with another request.
    Reused,
    /// Used with this request, whose event is the case's `sequence`th.
    Replay { case_id: String, sequence: u64 },
}

/// Judges the row found for a key: (case, sequence, stored request hash).
fn key_use(row: Option<(String, i64, Option<String>)>, idem: &Idempotency) -> KeyUse {
    match row {
        None => KeyUse::New,
        Some((_, _, hash)) if hash.as_deref() != Some(idem.request_hash.as_str()) => KeyUse::Reused,
        Some((case_id, sequence, _)) => KeyUse::Replay {
            case_id,
            sequence: sequence.max(0) as u64,
        },
    }
}

/// The answer the row found for a key gives, read through `events` (on SQLite, the group's
/// transaction): `None` for a new key, `KeyReused`, or the case after the first request's event.
async fn key_answer<E, S>(
    events: &S,
    row: Option<(String, i64, Option<String>)>,
    idem: &Idempotency,
) -> Result<Option<Result<Executed, ExecuteError<E>>>, StoreError>
where
    S: EventStore<Case>,
{
    match key_use(row, idem) {
        KeyUse::New => Ok(None),
        KeyUse::Reused => Ok(Some(Err(ExecuteError::KeyReused))),
        KeyUse::Replay { case_id, sequence } => {
            let envelopes = events
                .load_events(&case_id)
                .await
                .map_err(aggregate_error)?;
            Ok(Some(Ok(Executed {
                case: fold_first(envelopes, sequence),
                replayed: true,
            })))
        }
    }
}

/// The case after the first `n` of its events.
fn fold_first(envelopes: Vec<cqrs_es::EventEnvelope<Case>>, n: u64) -> Case {
    let mut case = Case::default();
    for envelope in envelopes.into_iter().take(n as usize) {
        case.apply(envelope.payload);
    }
    case
}

/// Runs a store read on its own task: a dropped request cannot stop it half-way.
async fn spawn<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Database(format!("store task failed: {e}"))))
}

enum RunError<E> {
    Rejected(E),
    Domain(CaseError),
    Conflict,
    Store(StoreError),
}

/// The state a command decides on without reading its case, and whether it came from a cache.
///
/// A filing (a case `number` was reserved) starts from the empty case: its id was minted by the
/// request, so no event can exist for it; were the id somehow taken, the append of sequence 1
/// would conflict. Any other command takes `cached` (the append checks it is current, and a
/// conflict then means the copy was stale), or `None`: read the case.
fn unread_state(
    id: &str,
    number: Option<u32>,
    cached: impl FnOnce() -> Option<cqrs_es::persist::EventStoreAggregateContext<Case>>,
) -> (
    Option<cqrs_es::persist::EventStoreAggregateContext<Case>>,
    bool,
) {
    if number.is_some() {
        let fresh = cqrs_es::persist::EventStoreAggregateContext {
            aggregate_id: id.to_string(),
            current_sequence: 0,
            aggregate: Case::default(),
            current_snapshot: None,
        };
        return (Some(fresh), false);
    }
    let cached = cached();
    let from_cache = cached.is_some();
    (cached, from_cache)
}

/// Load, decide, append: the cqrs-es command path, with our own checks in `build`.
async fn run<S, E, F>(
    events: &S,
    id: &str,
    cached: Option<cqrs_es::persist::EventStoreAggregateContext<Case>>,
    number: Option<u32>,
    build: &F,
    metadata: HashMap<String, String>,
) -> Result<Case, RunError<E>>
where
    S: EventStore<Case, AC = cqrs_es::persist::EventStoreAggregateContext<Case>>,
    F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Sync,
{
    let mut context = match cached {
        Some(context) => context,
        None => events.load_aggregate(id).await.map_err(run_error)?,
    };
    let command = build(&context.aggregate, number).map_err(RunError::Rejected)?;
    let sink = EventSink::default();
    context
        .aggregate
        .handle(command, &(), &sink)
        .await
        .map_err(RunError::Domain)?;
    let recorded: Vec<CaseEvent> = sink.collect().await;
    let after = context.aggregate.clone();
    events
        .commit(recorded, context, metadata)
        .await
        .map_err(run_error)?;
    Ok(after)
}

fn run_error<E>(err: AggregateError<CaseError>) -> RunError<E> {
    match err {
        AggregateError::UserError(e) => RunError::Domain(e),
        AggregateError::AggregateConflict => RunError::Conflict,
        AggregateError::UnexpectedError(inner) if is_unique_violation(inner.as_ref()) => {
            RunError::Conflict
        }
        other => RunError::Store(aggregate_error(other)),
    }
}

fn is_unique_violation(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    match err.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => matches!(
            db.code().as_deref(),
            // PostgreSQL unique_violation; SQLite SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY.
            Some("23505") | Some("2067") | Some("1555")
        ),
        _ => false,
    }
}

fn aggregate_error(err: AggregateError<CaseError>) -> StoreError {
    match err {
        AggregateError::DatabaseConnectionError(e) => StoreError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) => match e.downcast::<sqlx::Error>() {
            Ok(sqlx_err) => db_error(*sqlx_err),
            Err(e) => StoreError::Database(e.to_string()),
        },
        AggregateError::DeserializationError(e) => {
            StoreError::Database(format!("unreadable event: {e}"))
        }
        AggregateError::AggregateConflict => StoreError::Database("unexpected conflict".into()),
        AggregateError::UserError(e) => StoreError::Database(format!("unexpected refusal: {e}")),
    }
}

/// Sorts a database error into unavailable (retry later, nothing written) or other.
pub(crate) fn db_error(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(err.to_string()),
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("5") | Some("6") | Some("517"))
                || db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Database(err.to_string()),
    }
}

/// PostgreSQL's page of the log in log order: from the start (`$1` = limit), or after the event
/// at position `$1` (`$2` = limit).
///
/// Two statements, not one with `$1 IS NULL OR …`: a prepared statement gets a generic plan after
/// a few runs, and in a generic plan that `OR` cannot bound the index scan, which then walked the
/// whole log from its first entry on every page (the projector's reads grew with the log: 46 ms
/// per page at 50,000 events). A test checks the plan.
#[doc(hidden)]
pub fn log_page_sql(after: bool) -> String {
    if after {
        format!(
            "SELECT {PG_COLUMNS} FROM events \
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
               AND (txid, position) > (SELECT txid, position FROM events WHERE position = $1) \
             ORDER BY txid, position LIMIT $2"
        )
    } else {
        format!(
            "SELECT {PG_COLUMNS} FROM events \
             WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, position LIMIT $1"
        )
    }
}

/// A `StoredEvent` from a row of the `PG_COLUMNS` / `SQLITE_COLUMNS` select (same order).
macro_rules! stored_event {
    ($row:expr) => {{
        let row = $row;
        Ok(StoredEvent {
            case_id: row.try_get(0).map_err(db_error)?,
            sequence: row.try_get(1).map_err(db_error)?,
            event_type: row.try_get(2).map_err(db_error)?,
            event_version: row.try_get(3).map_err(db_error)?,
            payload: row.try_get(4).map_err(db_error)?,
            metadata: row.try_get(5).map_err(db_error)?,
            recorded_at: row.try_get(6).map_err(db_error)?,
            position: row.try_get(7).map_err(db_error)?,
            prev_hash: row.try_get(8).map_err(db_error)?,
            hash: row.try_get(9).map_err(db_error)?,
        })
    }};
}

fn stored_event_pg(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, StoreError> {
    stored_event!(row)
}

fn stored_event_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
    stored_event!(row)
}

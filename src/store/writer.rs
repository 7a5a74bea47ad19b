//! SQLite group commit: one writer task owns the connection that writes, and every command on
//! SQLite runs there.
//!
//! Role: SQLite lets one writer in at a time, and with `synchronous = FULL` every `COMMIT` waits
//! for an fsync of the WAL, so one transaction per command caps commands at the fsync rate
//! however many requests wait. The writer instead takes the commands queued (up to
//! [`MAX_GROUP`]) into one `BEGIN IMMEDIATE` transaction, runs them one after the other, each
//! append in a savepoint of its own, and commits once: one fsync for the whole group.
//!
//! Invariants:
//! - A command is answered only after its group's `COMMIT` returned, so whatever it
//!   acknowledges is durable. When the `COMMIT` fails, or the transaction is lost, every command
//!   of the group is answered with that error, whatever its own outcome was (a refusal too: it
//!   may have been decided on a write that never committed). None is acknowledged.
//! - A command runs wholly inside its group's transaction, on the writer's connection: its
//!   idempotency-key lookup, its case number, its case load, its decision and its append all see
//!   what the earlier commands of the group wrote. The commands of a group are serialized
//!   exactly as if each had committed before the next began.
//! - A command that fails (a conflict, a refusal, a store error) undoes only what it wrote (its
//!   append's savepoint; nothing else of it writes) and answers only for itself; the other
//!   commands of its group go on. Only a transaction in doubt (an append that could not be
//!   undone, a panic) fails the whole group.
//! - The caches (case states, case heads, the case-number series) learn a command's write only
//!   once its group has committed; a group that fails leaves them as they were.
//! - No artificial wait: a group takes what is queued when it starts and what arrives while it
//!   runs, up to [`MAX_GROUP`], and a command alone is committed at once.
//! - A command waits in the queue at most the pool's acquire timeout; after that it is answered
//!   `Unavailable` without running, as a request that waits too long for a connection is.
//! - The writer owns its connection (outside the pool). Closing the store answers every command
//!   already queued, then closes the connection.

use super::repository::{HeadHints, SharedAppends, SharedConnection, SqliteGroupRepository};
use super::{
    command_metadata, db_error, key_answer, run, unread_state, CommandMeta, ExecuteError, Executed,
    Idempotency, RunError, Store, StoreError, NUMBERING_ATTEMPTS,
};
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions, Row};
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiaojie_domain::{Case, CaseCommand};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most commands one group takes: enough to share an fsync among every request a busy
/// server has in flight, few enough that the first of them is not kept waiting long.
pub const MAX_GROUP: usize = 64;

/// How many commands may wait for the writer; a request beyond that waits to be queued.
const QUEUE: usize = 1024;

type GroupEvents = PersistedEventStore<SqliteGroupRepository, Case>;

/// What the writer has done since the store was opened (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Commands handed to the writer.
    pub submitted: u64,
    /// Groups committed: one `COMMIT`, one fsync each.
    pub commits: u64,
    /// Commands answered from committed groups (appends, replays and refusals alike).
    pub committed_commands: u64,
    /// Groups that failed whole (`BEGIN`, `COMMIT` or the transaction itself): every command in
    /// them was answered with the error.
    pub failed_groups: u64,
    /// The most commands one committed group held.
    pub largest_group: u64,
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    commits: AtomicU64,
    committed_commands: AtomicU64,
    failed_groups: AtomicU64,
    largest_group: AtomicU64,
}

/// Called once the group's fate is known: `Ok` after its `COMMIT`, otherwise the group's error.
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One command as the writer sees it, whatever its caller's error type.
trait GroupJob: Send {
    /// Runs the command inside `group`; the answer waits in the returned completion.
    fn run<'g>(self: Box<Self>, group: &'g mut Group) -> BoxFuture<'g, Completion>;
    /// Answers the command with `error` without running it.
    fn refuse(self: Box<Self>, error: StoreError);
}

struct Queued {
    at: Instant,
    job: Box<dyn GroupJob>,
}

/// The handle to the writer task.
pub(super) struct Writer {
    /// `None` once the store is closed.
    queue: std::sync::Mutex<Option<mpsc::Sender<Queued>>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    counters: Arc<Counters>,
    /// How long a command may wait to be queued and then to be taken.
    wait: Duration,
}

impl Writer {
    /// Starts the writer task. Its connection is opened with `options` when the first command
    /// arrives (and again after a failure left it in doubt).
    pub(super) fn start(
        options: SqliteConnectOptions,
        pool: SqlitePool,
        hints: Arc<HeadHints>,
        wait: Duration,
    ) -> Writer {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(write_groups(
            receiver,
            Opener {
                options,
                pool,
                hints,
            },
            counters.clone(),
            wait,
        ));
        Writer {
            queue: std::sync::Mutex::new(Some(sender)),
            task: tokio::sync::Mutex::new(Some(task)),
            counters,
            wait,
        }
    }

    /// Runs a command in the writer's next group and waits for its answer, which comes only
    /// after the group has committed.
    pub(super) async fn execute<E, F>(
        &self,
        store: &Store,
        case_id: Uuid,
        numbering: Option<String>,
        meta: CommandMeta,
        build: F,
    ) -> Result<Executed, ExecuteError<E>>
    where
        E: Send + 'static,
        F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Send + Sync + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(GroupCommand {
            store: store.clone(),
            case_id,
            numbering,
            meta,
            build,
            reply,
        });
        self.submit(job).await.map_err(ExecuteError::Store)?;
        // The writer answers every command it takes; a lost answer means the command panicked,
        // and its whole group was rolled back.
        answer.await.unwrap_or_else(|_| {
            Err(ExecuteError::Store(StoreError::Database(
                "the command failed and its group was rolled back".into(),
            )))
        })
    }

    async fn submit(&self, job: Box<dyn GroupJob>) -> Result<(), StoreError> {
        let sender = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let queued = Queued {
            at: Instant::now(),
            job,
        };
        match tokio::time::timeout(self.wait, sender.send(queued)).await {
            Ok(Ok(())) => {
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(StoreError::Unavailable("the writer has stopped".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "over {QUEUE} commands waited for the writer for {:?}",
                self.wait
            ))),
        }
    }

    /// Stops taking commands, answers those already queued, and closes the connection.
    pub(super) async fn close(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(task) = self.task.lock().await.take() {
            // A writer that panicked has nothing left to close.
            let _ = task.await;
        }
    }

    /// Whether the writer takes commands (it is not closed, and its task has not ended).
    pub(super) fn alive(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|sender| !sender.is_closed())
    }

    /// The counts so far.
    pub(super) fn stats(&self) -> GroupCommitStats {
        let c = &self.counters;
        GroupCommitStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            committed_commands: c.committed_commands.load(Ordering::Relaxed),
            failed_groups: c.failed_groups.load(Ordering::Relaxed),
            largest_group: c.largest_group.load(Ordering::Relaxed),
        }
    }
}

/// The writer's connection and what is built on it.
struct Connected {
    conn: SharedConnection,
    events: Arc<GroupEvents>,
    appends: SharedAppends,
}

/// What the writer needs to open its connection.
struct Opener {
    options: SqliteConnectOptions,
    pool: SqlitePool,
    hints: Arc<HeadHints>,
}

impl Opener {
    async fn connect(&self) -> Result<Connected, StoreError> {
        let conn = self
            .options
            .clone()
            // Each append's savepoint keeps the pages it changes in a sub-journal, a temporary
            // file by default: in memory it costs no system calls, and it only ever serves a
            // rollback inside the live transaction (a crash discards the transaction anyway),
            // so durability is the same.
            .pragma("temp_store", "memory")
            .connect()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open the SQLite writer connection: {e}"))
            })?;
        let conn: SharedConnection = Arc::new(tokio::sync::Mutex::new(conn));
        let appends = SharedAppends::default();
        let events = Arc::new(PersistedEventStore::new_event_store(
            SqliteGroupRepository::new(
                conn.clone(),
                self.pool.clone(),
                appends.clone(),
                self.hints.clone(),
            ),
        ));
        Ok(Connected {
            conn,
            events,
            appends,
        })
    }
}

/// The writer task: groups until the queue is closed and drained.
async fn write_groups(
    mut queue: mpsc::Receiver<Queued>,
    opener: Opener,
    counters: Arc<Counters>,
    wait: Duration,
) {
    let mut connected: Option<Connected> = None;
    // The last case number used per series, as committed (this writer is the process's only
    // SQLite writer, so it alone keeps this); read from the log on first use.
    let mut numbers: HashMap<String, u32> = HashMap::new();
    let mut pending: VecDeque<Queued> = VecDeque::new();
    let mut taken = Vec::with_capacity(MAX_GROUP);
    loop {
        if pending.is_empty() {
            // Waits only when nothing is queued, then takes everything queued (up to a group).
            if queue.recv_many(&mut taken, MAX_GROUP).await == 0 {
                break;
            }
            pending.extend(taken.drain(..));
        }
        let writer = match &connected {
            Some(writer) => writer,
            None => match opener.connect().await {
                Ok(writer) => connected.insert(writer),
                Err(e) => {
                    for q in pending.drain(..) {
                        q.job.refuse(e.clone());
                    }
                    continue;
                }
            },
        };
        let trusted = run_group(
            writer,
            &mut numbers,
            &mut pending,
            &mut queue,
            &counters,
            wait,
        )
        .await;
        if !trusted {
            // Dropping the connection rolls back whatever it may still hold open.
            connected = None;
        }
    }
    if let Some(writer) = connected {
        drop(writer.events);
        if let Ok(conn) = Arc::try_unwrap(writer.conn) {
            // Closing cleanly checkpoints the WAL if this is the file's last connection.
            let _ = sqlx::Connection::close(conn.into_inner()).await;
        }
    }
}

/// Runs one group: `BEGIN IMMEDIATE`, the commands one after the other (each append in its own
/// savepoint), `COMMIT`, then the answers. Returns whether the connection can be trusted with
/// the next group.
async fn run_group(
    writer: &Connected,
    numbers: &mut HashMap<String, u32>,
    pending: &mut VecDeque<Queued>,
    queue: &mut mpsc::Receiver<Queued>,
    counters: &Counters,
    wait: Duration,
) -> bool {
    // IMMEDIATE: the write lock is taken before anything is read, so every read of the group
    // sees the database as it is, and no other writer (another process, this process's
    // projector) can come between two commands of the group.
    if let Err(e) = control(&writer.conn, "BEGIN IMMEDIATE").await {
        counters.failed_groups.fetch_add(1, Ordering::Relaxed);
        for q in pending.drain(..) {
            q.job.refuse(e.clone());
        }
        // A failed BEGIN (the lock stayed busy past the busy timeout) leaves no transaction.
        return true;
    }
    *writer.appends.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    let mut group = Group {
        conn: writer.conn.clone(),
        events: writer.events.clone(),
        appends: writer.appends.clone(),
        states: HashMap::new(),
        numbers: numbers.clone(),
        broken: None,
    };
    let mut completions: Vec<Completion> = Vec::new();
    let mut taken = 0;
    while taken < MAX_GROUP && group.broken.is_none() {
        // What arrived while the group ran joins it: no waiting, only what is already there.
        let Some(next) = pending.pop_front().or_else(|| queue.try_recv().ok()) else {
            break;
        };
        taken += 1;
        if next.at.elapsed() > wait {
            next.job.refuse(StoreError::Unavailable(format!(
                "the command waited over {wait:?} for the writer"
            )));
            continue;
        }
        match AssertUnwindSafe(next.job.run(&mut group))
            .catch_unwind()
            .await
        {
            Ok(done) => {
                completions.push(done);
                let appends = group.appends.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(doubt) = &appends.in_doubt {
                    group.broken = Some(StoreError::Database(doubt.clone()));
                }
            }
            Err(_) => {
                tracing::error!(
                    "a command panicked in the SQLite writer; its group is rolled back"
                );
                group.broken.get_or_insert(StoreError::Database(
                    "a command of the group failed; nothing of the group was written".into(),
                ));
            }
        }
    }
    let outcome = match group.broken.take() {
        Some(e) => Err(e),
        None => control(&writer.conn, "COMMIT").await,
    };
    let mut trusted = true;
    if outcome.is_err() {
        // After a failed COMMIT the transaction may still be open (e.g. a deferred constraint);
        // if even ROLLBACK fails, the connection's state is unknown and it is replaced.
        trusted = control(&writer.conn, "ROLLBACK").await.is_ok();
    }
    match outcome {
        Ok(()) => {
            *numbers = group.numbers;
            let n = completions.len() as u64;
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.committed_commands.fetch_add(n, Ordering::Relaxed);
            counters.largest_group.fetch_max(n, Ordering::Relaxed);
            for done in completions {
                done(Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!(commands = completions.len(), "SQLite group failed: {e}");
            counters.failed_groups.fetch_add(1, Ordering::Relaxed);
            for done in completions {
                done(Err(e.clone()));
            }
        }
    }
    trusted
}

/// A transaction-control statement on the writer's connection (`BEGIN`, `COMMIT`, `ROLLBACK`).
async fn control(conn: &SharedConnection, sql: &str) -> Result<(), StoreError> {
    let mut conn = conn.lock().await;
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(db_error)
}

/// One group's transaction, as its commands see it.
pub(super) struct Group {
    conn: SharedConnection,
    /// The cqrs-es event store on the group's transaction.
    events: Arc<GroupEvents>,
    /// The heads the group's appends moved, shared with the repository.
    appends: SharedAppends,
    /// Cases written by this group's commands, as they now are (not yet committed).
    states: HashMap<String, Case>,
    /// The last case number per series as this transaction sees it.
    numbers: HashMap<String, u32>,
    /// Set when the transaction can no longer be trusted: the group is rolled back whole.
    broken: Option<StoreError>,
}

/// What a command wrote, published to the caches once its group has committed.
struct Wrote {
    case_id: String,
    case: Case,
    head: (usize, String),
}

impl Group {
    /// The last number used in `series`, as this transaction sees it.
    async fn last_number(&mut self, series: &str) -> Result<u32, StoreError> {
        match self.numbers.get(series) {
            Some(n) => Ok(*n),
            None => self.read_last_number(series).await,
        }
    }

    /// Reads a series' last number from the log (in the transaction) and keeps it.
    async fn read_last_number(&mut self, series: &str) -> Result<u32, StoreError> {
        let rows: Vec<String> = {
            let mut conn = self.conn.lock().await;
            sqlx::query_scalar(
                "SELECT json_extract(payload, '$.CaseFiled.case_no') FROM events \
                 WHERE event_type = 'CaseFiled' AND json_extract(payload, '$.CaseFiled.case_no') >= ?1 \
                 AND json_extract(payload, '$.CaseFiled.case_no') < ?2",
            )
            .bind(format!("{series}-"))
            .bind(format!("{series}."))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?
        };
        let last = rows
            .iter()
            .filter_map(|no| no.rsplit('-').next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0);
        self.numbers.insert(series.to_string(), last);
        Ok(last)
    }

    /// The earlier answer for an idempotency key, as the transaction sees the log: a key
    /// recorded by an earlier command of this group is found too.
    async fn replay<E>(
        &mut self,
        idem: &Idempotency,
    ) -> Result<Option<Result<Executed, ExecuteError<E>>>, StoreError> {
        let row = {
            let mut conn = self.conn.lock().await;
            sqlx::query(
                "SELECT aggregate_id, sequence, json_extract(metadata, '$.request_hash') AS request_hash FROM events \
                 WHERE json_extract(metadata, '$.idempotency_key') = ?1",
            )
            .bind(&idem.key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1), r.get::<Option<String>, _>(2)))
        };
        key_answer(&*self.events, row, idem).await
    }

    /// The case to decide on without reading it: as an earlier command of this group left it,
    /// or the store's cached copy when its head is known. The append checks it is current.
    fn known_state(&self, store: &Store, id: &str) -> Option<EventStoreAggregateContext<Case>> {
        match self.states.get(id) {
            Some(case) => Some(EventStoreAggregateContext {
                aggregate_id: id.to_string(),
                current_sequence: case.version as usize,
                aggregate: case.clone(),
                current_snapshot: None,
            }),
            None => store.command_state(id),
        }
    }
}

/// A caller's command, typed, on its way through the writer.
struct GroupCommand<E, F> {
    store: Store,
    case_id: Uuid,
    numbering: Option<String>,
    meta: CommandMeta,
    build: F,
    reply: oneshot::Sender<Result<Executed, ExecuteError<E>>>,
}

impl<E, F> GroupJob for GroupCommand<E, F>
where
    E: Send + 'static,
    F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Send + Sync + 'static,
{
    fn run<'g>(self: Box<Self>, group: &'g mut Group) -> BoxFuture<'g, Completion> {
        Box::pin(async move {
            let GroupCommand {
                store,
                case_id,
                numbering,
                meta,
                build,
                reply,
            } = *self;
            let (result, wrote) = store
                .execute_in_group(group, case_id, numbering.as_deref(), &meta, &build)
                .await;
            Box::new(move |committed: Result<(), StoreError>| {
                let answer = match committed {
                    Ok(()) => {
                        if let Some(wrote) = wrote {
                            store.cache(&wrote.case_id, &wrote.case);
                            store.inner.heads.remember(&wrote.case_id, wrote.head);
                            store.inner.appended.notify_waiters();
                        }
                        result
                    }
                    Err(e) => Err(ExecuteError::Store(e)),
                };
                // A caller that went away no longer waits for its answer.
                let _ = reply.send(answer);
            }) as Completion
        })
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(ExecuteError::Store(error)));
    }
}

type GroupOutcome<E> = (Result<Executed, ExecuteError<E>>, Option<Wrote>);

impl Store {
    /// One command inside the writer's group: the same steps and answers as the PostgreSQL
    /// path (`execute_here`), with every read on the group's transaction and each attempt in
    /// a savepoint. Returns the answer and, for an append, what to publish after the commit.
    async fn execute_in_group<E, F>(
        &self,
        group: &mut Group,
        case_id: Uuid,
        numbering: Option<&str>,
        meta: &CommandMeta,
        build: &F,
    ) -> GroupOutcome<E>
    where
        F: Fn(&Case, Option<u32>) -> Result<CaseCommand, E> + Sync,
    {
        if let Some(idem) = &meta.idempotency {
            match group.replay(idem).await {
                Ok(Some(replay)) => return (replay, None),
                Ok(None) => {}
                Err(e) => return (Err(ExecuteError::Store(e)), None),
            }
        }
        let metadata = command_metadata(meta);
        let id = case_id.to_string();
        let mut retried_stale = false;
        for _ in 0..NUMBERING_ATTEMPTS {
            let number = match numbering {
                Some(series) => match group.last_number(series).await {
                    Ok(last) => Some(last + 1),
                    Err(e) => return (Err(ExecuteError::Store(e)), None),
                },
                None => None,
            };
            let (known, from_cache) = unread_state(&id, number, || group.known_state(self, &id));
            // A failed append has undone itself (its savepoint) before `run` returns.
            match run(&*group.events, &id, known, number, build, metadata.clone()).await {
                Ok(case) => {
                    let head = group
                        .appends
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .heads
                        .get(&id)
                        .cloned();
                    let Some(head) = head else {
                        return (
                            Err(ExecuteError::Store(StoreError::Database(
                                "the append reported no head".into(),
                            ))),
                            None,
                        );
                    };
                    if let (Some(series), Some(n)) = (numbering, number) {
                        group.numbers.insert(series.to_string(), n);
                    }
                    group.states.insert(id.clone(), case.clone());
                    let wrote = Wrote {
                        case_id: id,
                        case: case.clone(),
                        head,
                    };
                    return (
                        Ok(Executed {
                            case,
                            replayed: false,
                        }),
                        Some(wrote),
                    );
                }
                Err(RunError::Rejected(e)) => return (Err(ExecuteError::Rejected(e)), None),
                Err(RunError::Domain(e)) => return (Err(ExecuteError::Domain(e)), None),
                Err(RunError::Store(e)) => return (Err(ExecuteError::Store(e)), None),
                Err(RunError::Conflict) => {
                    group.states.remove(&id);
                    self.uncache(&id);
                    if from_cache && !retried_stale {
                        // The copy decided on was stale (another process wrote): decide again
                        // on the case as the transaction reads it.
                        retried_stale = true;
                        continue;
                    }
                    if let Some(idem) = &meta.idempotency {
                        match group.replay(idem).await {
                            Ok(Some(replay)) => return (replay, None),
                            Ok(None) => {}
                            Err(e) => return (Err(ExecuteError::Store(e)), None),
                        }
                    }
                    match numbering {
                        // Another process filed with this number: read the series again.
                        Some(series) => {
                            if let Err(e) = group.read_last_number(series).await {
                                return (Err(ExecuteError::Store(e)), None);
                            }
                        }
                        None => return (Err(ExecuteError::Conflict), None),
                    }
                }
            }
        }
        (Err(ExecuteError::Conflict), None)
    }
}

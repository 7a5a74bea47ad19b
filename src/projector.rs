//! The projector: the one writer of the read models. It reads the log in log order from its
//! checkpoint and applies each batch, with the new checkpoint, in one transaction.
//!
//! Invariants:
//! - Nothing is lost or counted twice across crashes: rows and checkpoint commit together, and
//!   the checkpoint only moves from the value the batch was read at (a compare-and-set), so two
//!   projectors — or a projector and a rebuild — can never both apply the same events.
//! - On PostgreSQL exactly one server process projects: the one holding a session advisory lock.
//!   When it dies its connection closes, the lock is released, and a standby takes over within
//!   about a second.
//! - New events are picked up at once when this process wrote them, within `POLL` otherwise.

use crate::store::read_models::CHECKPOINT;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often an idle projector looks for events written by other processes.
pub const POLL: Duration = Duration::from_millis(200);
/// Events per batch.
pub const BATCH: i64 = 1_000;
/// The advisory lock key that elects the projecting process on PostgreSQL.
pub const LOCK_KEY: i64 = 7_402_202;

/// What the projector reports.
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    /// The task is alive (projecting or standing by).
    pub running: AtomicBool,
    /// This process holds the projector lock.
    pub active: AtomicBool,
    /// The last position applied, as this process knows it.
    pub position: AtomicI64,
}

/// Whether the projector should stop: told so, or its owner is gone.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Runs until `shutdown` turns true (or its sender is dropped). Database failures are logged and
/// retried; they never end it.
pub async fn run(store: Store, status: Arc<ProjectorStatus>, mut shutdown: watch::Receiver<bool>) {
    /// Marks the projector stopped however the task ends, a panic included, so `/readyz` tells.
    struct Running(Arc<ProjectorStatus>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.running.store(false, Ordering::SeqCst);
            self.0.active.store(false, Ordering::SeqCst);
        }
    }
    let _running = Running(status.clone());
    status.running.store(true, Ordering::SeqCst);
    while !stopping(&shutdown) {
        let outcome = match store.postgres_pool() {
            Some(pool) => lead_postgres(&store, pool.clone(), &status, &mut shutdown).await,
            None => project(&store, &status, &mut shutdown, None).await,
        };
        status.active.store(false, Ordering::SeqCst);
        if let Err(e) = outcome {
            tracing::warn!(reason = %e, "projector paused");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
    status.running.store(false, Ordering::SeqCst);
}

/// Waits for the advisory lock on a dedicated connection, then projects while holding it.
async fn lead_postgres(
    store: &Store,
    pool: sqlx::PgPool,
    status: &ProjectorStatus,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    // A connection of its own, outside the request pool: it holds the lock for as long as this
    // process projects, and must not take a request's place.
    let options = pool.connect_options();
    let mut conn = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::Connection::connect_with(&*options),
    )
    .await
    .map_err(|_| StoreError::Unavailable("timed out connecting for the projector lock".into()))?
    .map_err(crate::store::db_error)?;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(crate::store::db_error)?;
        if got {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if stopping(shutdown) {
            return Ok(());
        }
    }
    tracing::info!("projector active (holding the PostgreSQL projector lock)");
    let result = project(store, status, shutdown, Some(&mut conn)).await;
    // Release explicitly; closing the connection would release it too.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut conn)
        .await;
    let _ = sqlx::Connection::close(conn).await;
    result
}

async fn project(
    store: &Store,
    status: &ProjectorStatus,
    shutdown: &mut watch::Receiver<bool>,
    mut lock: Option<&mut sqlx::PgConnection>,
) -> Result<(), StoreError> {
    status.active.store(true, Ordering::SeqCst);
    let mut known = HashMap::new();
    let mut after = store.checkpoint(CHECKPOINT).await?;
    status.position.store(after, Ordering::SeqCst);
    let mut last_lock_check = std::time::Instant::now();
    while !stopping(shutdown) {
        if let Some(conn) = lock.as_deref_mut() {
            if last_lock_check.elapsed() > Duration::from_secs(1) {
                // The lock lives as long as this connection: if it is gone, so is the lock.
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map_err(crate::store::db_error)?;
                last_lock_check = std::time::Instant::now();
            }
        }
        let page = store
            .read_log(Some(after).filter(|a| *a > 0), BATCH)
            .await?;
        if page.is_empty() {
            tokio::select! {
                _ = store.appended() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let last = page.last().map(|e| e.position).unwrap_or(after);
        if store
            .apply_batch(&page, "", CHECKPOINT, after, &mut known)
            .await?
        {
            after = last;
        } else {
            // Someone else moved the checkpoint (a rebuild swapped tables in): start over from it.
            known.clear();
            after = store.checkpoint(CHECKPOINT).await?;
        }
        status.position.store(after, Ordering::SeqCst);
        if known.len() > 50_000 {
            known.clear();
        }
    }
    Ok(())
}

/// Rebuilds every read model from the log into fresh tables and swaps them in, while the API
/// (and the live projector) keep running. Returns the position the new tables reflect.
pub async fn rebuild(store: &Store) -> Result<i64, StoreError> {
    const NAME: &str = "rebuild";
    // A fresh suffix each time: the tables are renamed into place, but their indexes keep the
    // names they were built with, and a reused name would collide with the live table's.
    let suffix = format!("_rebuild_{}", chrono::Utc::now().timestamp_millis());
    let started = std::time::Instant::now();
    store.reset_checkpoint(NAME).await?;
    if store.postgres_pool().is_some() {
        // One pass over the table into bare tables, then the indexes, then the projector's
        // batches only for what was written meanwhile.
        let complete = store.create_bare_read_models(&suffix).await?;
        let filled = store.bulk_fill(&suffix, NAME).await?;
        tracing::info!(
            events = filled.events,
            position = filled.position,
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: log read and read models written"
        );
        store.complete_read_models(&complete).await?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "rebuild: constraints and indexes built"
        );
    } else {
        // SQLite has one writer: a single long fill would hold the API's writes back for its
        // whole length, so its rebuild goes in the projector's short batches.
        store.create_fresh_read_models(&suffix).await?;
    }
    let mut known = HashMap::new();
    store.swap_read_models(&suffix, NAME, &mut known).await
}

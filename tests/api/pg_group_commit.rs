//! Group commit on PostgreSQL: single-event appends that arrive together go in one statement
//! (`store::pg_appends`), and each still gets the answer it would get alone.
//!
//! A group is held together on purpose: a connection of the test's own locks the head row of a
//! "sentinel" case, so the statement carrying the sentinel's append waits for that lock while
//! the appends sent after it queue; they all go in the next statement once the lock is released.
//!
//! - In one group, an append chained to a stale head (the case moved on another server) is the
//!   only one not written; the others commit, and the stale command decides again on the case as
//!   it is now and succeeds.
//! - A group statement that fails (its connection killed) answers its own commands with 503 and
//!   writes none of them; the appends queued behind it go in the next statement and commit.

use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiaojie::store::PgGroupStats;

fn stats(app: &TestApp) -> PgGroupStats {
    app.state
        .store
        .pg_group_stats()
        .expect("a PostgreSQL store has a group appender")
}

/// Waits until `done` holds, failing the test after ten seconds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many sessions of the test database wait for a lock.
async fn lock_waiters(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(conn)
    .await
    .expect("pg_stat_activity")
}

/// Locks the sentinel's head row from the test's own connection and sends a note on it through
/// `app`, then waits until that note's group statement is blocked on the lock. Returns the
/// locking transaction's connection and the note's task.
async fn hold_group(
    app: &Arc<TestApp>,
    sentinel: &str,
    token: &str,
) -> (PgConnection, tokio::task::JoinHandle<Reply>) {
    let mut locker = PgConnection::connect(&app.url).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT 1 FROM case_heads WHERE aggregate_id = $1 FOR UPDATE")
        .bind(sentinel)
        .execute(&mut locker)
        .await
        .unwrap();
    let held = {
        let app = app.clone();
        let path = format!("/api/v1/cases/{sentinel}/notes");
        let token = token.to_string();
        tokio::spawn(async move { app.post(&path, &token, json!({"text": "哨兵备注"})).await })
    };
    let mut watcher = PgConnection::connect(&app.url).await.expect("connect");
    let start = Instant::now();
    while lock_waiters(&mut watcher).await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sentinel's group statement never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (locker, held)
}

/// Sends a note on each case through `app`, one at a time, each only once the one before is
/// queued behind the held statement.
async fn queue_notes(
    app: &Arc<TestApp>,
    cases: &[String],
    token: &str,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    let waiting_before = stats(app).waiting;
    let mut tasks = Vec::new();
    for (i, id) in cases.iter().enumerate() {
        let task = {
            let app = app.clone();
            let path = format!("/api/v1/cases/{id}/notes");
            let token = token.to_string();
            tokio::spawn(async move { app.post(&path, &token, json!({"text": "成组备注"})).await })
        };
        tasks.push(task);
        let want = waiting_before + i as u64 + 1;
        until("a note queued behind the held statement", || {
            stats(app).waiting >= want
        })
        .await;
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_append_in_a_group_fails_alone_and_decides_again() {
    if postgres_url().is_none() {
        return;
    }
    let a = TestApp::start(Backend::Postgres).await;
    let b = Arc::new(TestApp::on(Backend::Postgres, a.url.clone()).await);
    let ra = room_admin("R01");

    let sentinel = a.file(&ra, "R01").await;
    let mut cases = Vec::new();
    for _ in 0..12 {
        cases.push(a.file(&ra, "R01").await);
    }
    // Server B folds every case (version 1) and keeps it cached.
    for id in cases.iter().chain([&sentinel]) {
        let read = b.get(&format!("/api/v1/cases/{id}"), &ra).await;
        assert_eq!(read.body["version"], 1, "{}", read.body);
    }
    // Server A moves the first case on: B's fold of it is now stale.
    let moved = a
        .post(
            &format!("/api/v1/cases/{}/notes", cases[0]),
            &ra,
            json!({"text": "另一台服务器的备注"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["version"], 2);

    let before = stats(&b);
    let (mut locker, held) = hold_group(&b, &sentinel, &ra).await;
    let queued = queue_notes(&b, &cases, &ra).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();

    let held = held.await.expect("sentinel task");
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    assert_eq!(held.body["version"], 2);
    for (i, task) in queued.into_iter().enumerate() {
        let reply = task.await.expect("note task");
        assert_eq!(reply.status, StatusCode::OK, "case {i}: {}", reply.body);
        // The stale one was refused by the statement, read the case again and appended after
        // A's note; the others were written by the group as sent.
        let want = if i == 0 { 3 } else { 2 };
        assert_eq!(reply.body["version"], want, "case {i}: {}", reply.body);
    }

    let after = stats(&b);
    assert!(
        after.mixed_groups > before.mixed_groups,
        "no statement held both written and refused appends: {before:?} → {after:?}"
    );
    assert!(
        after.largest_group >= cases.len() as u64,
        "the queued notes did not go in one statement: {after:?}"
    );
    assert_eq!(after.failed_statements, before.failed_statements);

    // Every chain is whole: 13 filings, A's note, the sentinel's and 12 queued notes.
    let verify = a.get("/api/v1/audit/verify", &admin()).await;
    assert_eq!(verify.status, StatusCode::OK, "{}", verify.body);
    assert_eq!(verify.body["invalid"], json!([]), "{}", verify.body);
    assert_eq!(verify.body["events_checked"], 27, "{}", verify.body);
    assert_eq!(a.event_count(&cases[0]).await, 3);
    assert_eq!(a.event_count(&cases[1]).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_statement_writes_nothing_and_the_queue_goes_on() {
    if postgres_url().is_none() {
        return;
    }
    let app = Arc::new(TestApp::start(Backend::Postgres).await);
    let ra = room_admin("R02");
    let sentinel = app.file(&ra, "R02").await;
    let mut cases = Vec::new();
    for _ in 0..3 {
        cases.push(app.file(&ra, "R02").await);
    }
    // A read caches each case, so each note appends through the group appender.
    for id in cases.iter().chain([&sentinel]) {
        assert_eq!(
            app.get(&format!("/api/v1/cases/{id}"), &ra).await.status,
            StatusCode::OK
        );
    }

    let before = stats(&app);
    let (mut locker, held) = hold_group(&app, &sentinel, &ra).await;
    let queued = queue_notes(&app, &cases, &ra).await;
    // The held statement's connection dies under it.
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock') t",
    )
    .fetch_one(&mut locker)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let held = held.await.expect("sentinel task");
    assert_eq!(
        held.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        held.body
    );
    for (i, task) in queued.into_iter().enumerate() {
        let reply = task.await.expect("note task");
        assert_eq!(reply.status, StatusCode::OK, "case {i}: {}", reply.body);
        assert_eq!(reply.body["version"], 2, "case {i}: {}", reply.body);
    }
    let after = stats(&app);
    assert_eq!(after.failed_statements, before.failed_statements + 1);
    // Nothing of the failed statement was written; the sentinel takes its note on a retry.
    assert_eq!(app.event_count(&sentinel).await, 1);
    let again = app
        .post(
            &format!("/api/v1/cases/{sentinel}/notes"),
            &ra,
            json!({"text": "重试"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["version"], 2);
}

//! Group commit on SQLite: concurrent commands share transactions and still each get the answer
//! they would get alone. Many commands on many cases all commit, with valid chains, in fewer
//! commits than commands (and the same load passes on PostgreSQL, which has no writer). In one
//! group held together on purpose: a stale `If-Match`, a second write to a case the group already
//! wrote, an idempotent twin and a reused key, a domain refusal, consecutive case numbers, and an
//! append that fails after its insert each answer for themselves while the rest commit. A group
//! whose COMMIT fails answers every command with an error and leaves nothing behind. And every
//! acknowledged write of the real binary survives a SIGKILL.
//!
//! A group is held together by holding SQLite's write lock from a connection of the test's own:
//! the writer waits for it in `BEGIN IMMEDIATE` while the commands queue, in the order the test
//! sends them (it waits until each is queued before sending the next), and the group takes them
//! all once the lock is released.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiaojie::store::GroupCommitStats;

fn year() -> String {
    chrono::Utc::now()
        .with_timezone(&tiaojie_domain::shenzhen_offset())
        .format("%Y")
        .to_string()
}

fn stats(app: &TestApp) -> GroupCommitStats {
    app.state
        .store
        .group_commit_stats()
        .expect("an SQLite store has a writer")
}

/// Every chain in the log is valid, through the API.
async fn chains_valid(app: &TestApp, events: u64) {
    let verify = app.get("/api/v1/audit/verify", &admin()).await;
    assert_eq!(verify.status, StatusCode::OK, "{}", verify.body);
    assert_eq!(verify.body["invalid"], json!([]), "{}", verify.body);
    assert_eq!(verify.body["events_checked"], events, "{}", verify.body);
}

// ---------------------------------------------------------------------------------------------
// 1. Many concurrent commands on different cases.

async fn concurrent_commands_on_many_cases_all_commit_with_valid_chains(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    const CASES: usize = 30;
    let before = app.state.store.group_commit_stats();
    let tasks: Vec<_> = (0..CASES)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let room = format!("R{:02}", 1 + i % 6);
                let ra = room_admin(&room);
                let filed = app.post("/api/v1/cases", &ra, filing(&room)).await;
                assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
                let id = filed.body["case_id"].as_str().unwrap().to_string();
                let no = filed.body["case_no"].as_str().unwrap().to_string();
                let c = |s: &str| format!("/api/v1/cases/{id}/{s}");
                let m = format!("m-{i:04}");
                let steps = [
                    (c("accept"), ra.clone(), json!({"note": "受理"})),
                    (
                        c("mediators"),
                        ra.clone(),
                        json!({"mediator_id": m, "name": "李调解", "lead": true}),
                    ),
                    (
                        c("sessions"),
                        mediator(&m, &room),
                        json!({"summary": "第一次调解", "attendees": ["张三"]}),
                    ),
                    (c("notes"), ra.clone(), json!({"text": format!("备注 {i}")})),
                    (c("notes"), ra.clone(), json!({"text": "再次联系"})),
                ];
                for (n, (path, token, body)) in steps.into_iter().enumerate() {
                    let reply = app.post(&path, &token, body).await;
                    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
                    assert_eq!(reply.body["version"], n as u64 + 2, "{path}");
                }
                (room, no)
            })
        })
        .collect();
    let mut numbers: HashMap<String, Vec<String>> = HashMap::new();
    for joined in futures::future::join_all(tasks).await {
        let (room, no) = joined.expect("case task");
        numbers.entry(room).or_default().push(no);
    }
    // Each room's filings took consecutive numbers from 0001.
    let year = year();
    for (room, mut nos) in numbers {
        nos.sort();
        let expected: Vec<String> = (1..=nos.len())
            .map(|n| format!("{room}-{year}-{n:04}"))
            .collect();
        assert_eq!(nos, expected);
    }
    let events = (CASES * 6) as u64;
    assert_eq!(app.total_events().await, events as i64);
    chains_valid(&app, events).await;

    if let Some(before) = before {
        let after = stats(&app);
        let commands = after.committed_commands - before.committed_commands;
        let commits = after.commits - before.commits;
        assert_eq!(commands, events, "every command was answered from a commit");
        assert!(
            commits < commands,
            "{commands} concurrent commands took {commits} commits: no group held two"
        );
        assert!(after.largest_group > 1, "{after:?}");
        assert_eq!(after.failed_groups, 0, "{after:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Holding a group together.

/// A connection of the test's own that holds SQLite's write lock until released.
struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    async fn take(app: &TestApp) -> WriteLock {
        let mut conn = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        WriteLock(conn)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// One request to queue: method, path, token, body, headers.
struct Call {
    path: String,
    token: String,
    body: Value,
    headers: Vec<(String, String)>,
}

fn call(path: impl Into<String>, token: &str, body: Value) -> Call {
    Call {
        path: path.into(),
        token: token.to_string(),
        body,
        headers: Vec::new(),
    }
}

impl Call {
    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// Sends `calls` while the test holds the write lock, each only once the one before is queued
/// for the writer, so the writer runs them in this order; then releases the lock and returns
/// the answers in the same order. They all ran in one group (checked).
async fn in_one_group(app: &Arc<TestApp>, calls: Vec<Call>) -> Vec<Reply> {
    let before = stats(app);
    let lock = WriteLock::take(app).await;
    let mut tasks = Vec::new();
    for (i, c) in calls.into_iter().enumerate() {
        let app2 = app.clone();
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = c
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            app2.send(
                Method::POST,
                &c.path,
                Some(&c.token),
                c.body.clone(),
                &headers,
            )
            .await
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats(app).submitted < before.submitted + i as u64 + 1 {
            assert!(Instant::now() < deadline, "call {i} was never queued");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let n = tasks.len() as u64;
    lock.release().await;
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    let after = stats(app);
    assert_eq!(
        after.commits + after.failed_groups,
        before.commits + before.failed_groups + 1,
        "the calls ran in one group: {before:?} → {after:?}"
    );
    assert!(after.largest_group >= n || after.failed_groups > before.failed_groups);
    replies
}

async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    let history = app
        .get(&format!("/api/v1/cases/{id}/history"), &admin())
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    history.body["events"].as_array().unwrap().clone()
}

fn assert_problem(reply: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert_eq!(reply.code(), code, "{what}: {}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// 2. One group: each command answers for itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_group_each_command_answers_for_itself() {
    let app = Arc::new(TestApp::start(Backend::Sqlite).await);
    let ra = room_admin("R01");
    let a = app.file(&ra, "R01").await;
    let b = app.file(&ra, "R01").await;
    let c = app.file(&ra, "R01").await;
    let d = app.file(&ra, "R01").await;
    let e = app.file(&ra, "R01").await;
    // Case D's head cannot move: its append fails after the event row went in.
    {
        let mut conn = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
        sqlx::query(&format!(
            "CREATE TRIGGER test_d_head_stuck BEFORE UPDATE ON case_heads WHEN NEW.aggregate_id = '{d}' \
             BEGIN SELECT RAISE(ABORT, 'the head of D is stuck'); END"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let step = |id: &str, s: &str| format!("/api/v1/cases/{id}/{s}");
    let ra8 = room_admin("R08");
    let ra9 = room_admin("R09");
    let mut other = filing("R08");
    other["summary"] = json!("同一个幂等键，另一个请求");
    let replies = in_one_group(
        &app,
        vec![
            // 0–2: three accepts of A, each expecting version 1: the first wins.
            call(step(&a, "accept"), &ra, json!({})).header("if-match", "\"1\""),
            call(step(&a, "accept"), &ra, json!({})).header("if-match", "\"1\""),
            call(step(&a, "accept"), &ra, json!({})).header("if-match", "\"1\""),
            // 3–4: two notes on B: the second sees the first, not yet committed.
            call(step(&b, "notes"), &ra, json!({"text": "第一条"})),
            call(step(&b, "notes"), &ra, json!({"text": "第二条"})),
            // 5: a domain refusal: C has no agreement to confirm.
            call(
                step(&c, "judicial-confirmation"),
                &ra,
                json!({"status": "requested", "court": "福田区人民法院"}),
            ),
            // 6: D's append fails after its insert: only D's command fails.
            call(step(&d, "notes"), &ra, json!({"text": "写不进去"})),
            // 7: the group goes on: E's note after D's failure.
            call(step(&e, "notes"), &ra, json!({"text": "照常写入"})),
            // 8–10: a keyed filing, its twin (a replay of a key not yet committed), and the
            // key with another body.
            call("/api/v1/cases", &ra8, filing("R08")).header("idempotency-key", "group-key-1"),
            call("/api/v1/cases", &ra8, filing("R08")).header("idempotency-key", "group-key-1"),
            call("/api/v1/cases", &ra8, other).header("idempotency-key", "group-key-1"),
            // 11–13: three filings in R09: consecutive numbers.
            call("/api/v1/cases", &ra9, filing("R09")),
            call("/api/v1/cases", &ra9, filing("R09")),
            call("/api/v1/cases", &ra9, filing("R09")),
        ],
    )
    .await;

    assert_eq!(replies[0].status, StatusCode::OK, "{}", replies[0].body);
    assert_eq!(replies[0].body["version"], 2);
    assert_eq!(replies[0].body["status"], "accepted");
    for r in &replies[1..3] {
        assert_problem(
            r,
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "stale If-Match",
        );
    }
    assert_eq!(replies[3].status, StatusCode::OK, "{}", replies[3].body);
    assert_eq!(replies[3].body["version"], 2);
    assert_eq!(replies[4].status, StatusCode::OK, "{}", replies[4].body);
    assert_eq!(replies[4].body["version"], 3);
    assert_eq!(replies[4].etag().as_deref(), Some("\"3\""));
    assert_problem(
        &replies[5],
        StatusCode::CONFLICT,
        "invalid_transition",
        "refusal",
    );
    assert_problem(
        &replies[6],
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "D",
    );
    assert_eq!(replies[7].status, StatusCode::OK, "{}", replies[7].body);
    assert_eq!(replies[7].body["version"], 2);
    assert_eq!(
        replies[8].status,
        StatusCode::CREATED,
        "{}",
        replies[8].body
    );
    assert!(replies[8].headers.get("idempotent-replayed").is_none());
    assert_eq!(
        replies[9].status,
        StatusCode::CREATED,
        "{}",
        replies[9].body
    );
    assert_eq!(
        replies[9]
            .headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        replies[9].body, replies[8].body,
        "the twin replays the first"
    );
    assert_problem(
        &replies[10],
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "reused key",
    );
    let year = year();
    assert_eq!(replies[8].body["case_no"], format!("R08-{year}-0001"));
    for (i, r) in replies[11..14].iter().enumerate() {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["case_no"], format!("R09-{year}-{:04}", i + 1));
    }

    // The log holds exactly what was acknowledged.
    let a_events = events_of(&app, &a).await;
    assert_eq!(a_events.len(), 2);
    assert_eq!(a_events[1]["type"], "CaseAccepted");
    let b_events = events_of(&app, &b).await;
    assert_eq!(b_events.len(), 3);
    assert_eq!(b_events[1]["data"]["NoteAdded"]["text"], "第一条");
    assert_eq!(b_events[2]["data"]["NoteAdded"]["text"], "第二条");
    assert_eq!(events_of(&app, &c).await.len(), 1);
    assert_eq!(
        events_of(&app, &d).await.len(),
        1,
        "D's failed append left nothing"
    );
    assert_eq!(events_of(&app, &e).await.len(), 2);
    // 5 filings, A's accept, B's two notes, E's note, the keyed filing, three R09 filings.
    let total = 5 + 1 + 2 + 1 + 1 + 3;
    assert_eq!(app.total_events().await, total);
    chains_valid(&app, total as u64).await;

    // What the caches learned is what committed: reads and the next commands carry on from it.
    let read = app.get(&format!("/api/v1/cases/{b}"), &ra).await;
    assert_eq!(read.body["version"], 3);
    let next = app
        .post(&step(&b, "notes"), &ra, json!({"text": "组提交之后"}))
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_eq!(next.body["version"], 4);
    let next = app.post("/api/v1/cases", &ra9, filing("R09")).await;
    assert_eq!(next.body["case_no"], format!("R09-{year}-0004"));
    let mut conn = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
    sqlx::query("DROP TRIGGER test_d_head_stuck")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let d_note = app
        .post(&step(&d, "notes"), &ra, json!({"text": "现在可以了"}))
        .await;
    assert_eq!(d_note.status, StatusCode::OK, "{}", d_note.body);
    assert_eq!(d_note.body["version"], 2);
    chains_valid(&app, total as u64 + 3).await;
}

// ---------------------------------------------------------------------------------------------
// 3. A COMMIT that fails fails the whole group.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_answers_every_command_of_its_group_with_an_error() {
    let app = Arc::new(TestApp::start(Backend::Sqlite).await);
    let ra = room_admin("R02");
    let x = app.file(&ra, "R02").await;
    let y = app.file(&ra, "R02").await;
    let z = app.file(&ra, "R02").await;
    // An event of X leaves a dangling deferred foreign key: SQLite refuses the COMMIT.
    let mut conn = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
    for sql in [
        "CREATE TABLE test_parent (id TEXT PRIMARY KEY)".to_string(),
        "CREATE TABLE test_child (parent TEXT REFERENCES test_parent (id) DEFERRABLE INITIALLY DEFERRED)"
            .to_string(),
        format!(
            "CREATE TRIGGER test_x_dangles AFTER INSERT ON events WHEN NEW.aggregate_id = '{x}' \
             BEGIN INSERT INTO test_child VALUES ('nobody'); END"
        ),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let before = stats(&app);
    let step = |id: &str, s: &str| format!("/api/v1/cases/{id}/{s}");
    let replies = in_one_group(
        &app,
        vec![
            call(step(&y, "notes"), &ra, json!({"text": "Y"})),
            call(step(&x, "notes"), &ra, json!({"text": "X"})),
            call(step(&z, "notes"), &ra, json!({"text": "Z"})),
            // Refused on its own (stale If-Match), yet also answered with the group's error:
            // nothing is acknowledged from a group that did not commit.
            call(step(&y, "accept"), &ra, json!({})).header("if-match", "\"7\""),
            call("/api/v1/cases", &ra, filing("R02")),
        ],
    )
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_problem(
            r,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("call {i}"),
        );
    }
    let after = stats(&app);
    assert_eq!(after.failed_groups, before.failed_groups + 1);
    assert_eq!(after.commits, before.commits);
    assert_eq!(
        app.total_events().await,
        3,
        "nothing of the group was written"
    );
    for id in [&x, &y, &z] {
        assert_eq!(events_of(&app, id).await.len(), 1);
    }

    // Without the trap, the same commands go through on the cases as they really are.
    let mut conn = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
    sqlx::query("DROP TRIGGER test_x_dangles")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    for id in [&x, &y, &z] {
        let r = app
            .post(&step(id, "notes"), &ra, json!({"text": "重试"}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["version"], 2);
    }
    let filed = app.post("/api/v1/cases", &ra, filing("R02")).await;
    assert_eq!(filed.body["case_no"], format!("R02-{}-0004", year()));
    chains_valid(&app, 7).await;
}

// ---------------------------------------------------------------------------------------------
// 4. The real binary, SIGKILLed under load: every acknowledged write is in the log.

/// A POST to the real binary with its request id; `Err` when the server is gone.
async fn post_as(
    addr: SocketAddr,
    path: &str,
    token: &str,
    request_id: &str,
    body: &Value,
) -> Result<(u16, Value), String> {
    let headers = [("X-Request-Id", request_id)];
    raw_request(addr, "POST", path, Some(token), &headers, Some(body)).await
}

/// The real binary on `url`, listening on a free port; returns once it accepts connections.
async fn start_server(url: &str, dir: &std::path::Path) -> (std::process::Child, SocketAddr) {
    let addr: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_tiaojie"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIAOJIE_DATABASE_URL", url)
        .env("TIAOJIE_JWT_SECRET", SECRET)
        .env("TIAOJIE_DATA_DIR", dir)
        .env("TIAOJIE_LISTEN", addr.to_string())
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tiaojie");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited with {status}");
        }
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (server, addr)
}

/// Eight writers file cases and add notes until the server stops answering; every request id
/// the server acknowledged is recorded. Returns once `acks` writes were acknowledged and the
/// server has been SIGKILLed.
async fn write_until_killed(
    mut server: std::process::Child,
    addr: SocketAddr,
    round: usize,
    acks: usize,
) -> HashSet<String> {
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let token = admin();
                let mut n = 0;
                loop {
                    let room = format!("R{:02}", 1 + w % 3);
                    let rid = format!("kill-{round}-{w}-{n}");
                    n += 1;
                    let id =
                        match post_as(addr, "/api/v1/cases", &token, &rid, &filing(&room)).await {
                            Ok((201, body)) => {
                                acknowledged.lock().unwrap().push(rid);
                                body["case_id"].as_str().unwrap().to_string()
                            }
                            Ok((status, body)) => panic!("filing refused: {status} {body}"),
                            Err(_) => return,
                        };
                    for k in 0..4 {
                        let rid = format!("kill-{round}-{w}-{n}");
                        n += 1;
                        let path = format!("/api/v1/cases/{id}/notes");
                        let body = json!({"text": format!("备注 {k}")});
                        match post_as(addr, &path, &token, &rid, &body).await {
                            Ok((200, _)) => acknowledged.lock().unwrap().push(rid),
                            Ok((status, body)) => panic!("note refused: {status} {body}"),
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < acks {
        assert!(Instant::now() < deadline, "too few writes within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    for w in writers {
        w.await.expect("a writer panicked");
    }
    let done = acknowledged.lock().unwrap().drain(..).collect();
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commands_survive_a_sigkill() {
    let url = fresh_database(Backend::Sqlite).await;
    let dir = std::env::temp_dir().join(format!(
        "tiaojie-group-kill-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // Several rounds on one file: each restart recovers the WAL of a writer killed mid-group and
    // numbers on from the log. (A kill cannot show an answer sent before its COMMIT's fsync: the
    // operating system keeps what was written. The failed-COMMIT test shows answers wait.)
    let mut acknowledged = HashSet::new();
    for round in 0..3 {
        let (server, addr) = start_server(&url, &dir).await;
        acknowledged.extend(write_until_killed(server, addr, round, 150 + 37 * round).await);

        let store = open(&url, 4).await;
        let recorded: Vec<String> =
            sqlx::query_scalar("SELECT json_extract(metadata, '$.request_id') FROM events")
                .fetch_all(store.sqlite_pool().unwrap())
                .await
                .unwrap();
        let recorded: HashSet<String> = recorded.into_iter().collect();
        let lost: Vec<&String> = acknowledged.difference(&recorded).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged writes are not in the log after the kill: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
        let verified = tiaojie::audit::verify_all(&store).await.unwrap();
        assert!(verified.invalid.is_empty(), "{:?}", verified.invalid);
        assert_eq!(verified.events_checked as usize, recorded.len());
        // A group cut off by the kill took its case numbers with it: no gaps.
        let numbers: Vec<String> = sqlx::query_scalar(
            "SELECT json_extract(payload, '$.CaseFiled.case_no') FROM events WHERE event_type = 'CaseFiled'",
        )
        .fetch_all(store.sqlite_pool().unwrap())
        .await
        .unwrap();
        let mut by_room: HashMap<String, Vec<u32>> = HashMap::new();
        for no in numbers {
            let (series, n) = no.rsplit_once('-').unwrap();
            by_room
                .entry(series.to_string())
                .or_default()
                .push(n.parse().unwrap());
        }
        for (series, mut ns) in by_room {
            ns.sort();
            let expected: Vec<u32> = (1..=ns.len() as u32).collect();
            assert_eq!(
                ns, expected,
                "round {round}: the numbers of {series} have gaps"
            );
        }
        store.close().await;
    }
}

both_stores!(concurrent_commands_on_many_cases_all_commit_with_valid_chains);

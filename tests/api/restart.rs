//! Restarts and an absent database: a server reopened on the same SQLite file or PostgreSQL
//! database has every case exactly as before and keeps numbering where it stopped; migrations
//! applied again change nothing; an unreachable database fails fast with one line, and a closed
//! pool answers 503 `unavailable`, never 500.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tiaojie::store::{PoolSettings, Store, StoreError};

fn year() -> String {
    chrono::Utc::now()
        .with_timezone(&tiaojie_domain::shenzhen_offset())
        .format("%Y")
        .to_string()
}

/// What a case read shows: the body, its version and its `ETag`, and the history.
#[derive(Debug, PartialEq)]
struct Snapshot {
    body: Value,
    version: u64,
    etag: Option<String>,
    history: Value,
}

async fn snapshot(app: &TestApp, id: &str) -> Snapshot {
    let read = app.get(&format!("/api/v1/cases/{id}"), &admin()).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let history = app
        .get(&format!("/api/v1/cases/{id}/history"), &admin())
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    Snapshot {
        version: read.body["version"].as_u64().unwrap(),
        etag: read.etag(),
        body: read.body,
        history: history.body,
    }
}

async fn ok_step(app: &TestApp, token: &str, path: &str, body: Value) {
    let reply = app.post(path, token, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
}

async fn migrations_applied(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM tiaojie_migrations";
    if let Some(pool) = app.state.store.postgres_pool() {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    } else {
        sqlx::query_scalar(sql)
            .fetch_one(app.state.store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }
}

async fn a_restarted_server_has_every_case(backend: Backend) {
    let app = TestApp::start(backend).await;
    let url = app.url.clone();
    let ra1 = room_admin("R01");
    let ra2 = room_admin("R02");
    let mut ids = Vec::new();
    for i in 0..10 {
        let (token, room) = if i % 3 == 2 {
            (&ra2, "R02")
        } else {
            (&ra1, "R01")
        };
        ids.push(app.file(token, room).await);
    }
    // Steps on some: R01's first case goes far, others a little.
    let c = |id: &str, s: &str| format!("/api/v1/cases/{id}/{s}");
    ok_step(&app, &ra1, &c(&ids[0], "accept"), json!({"note": "受理"})).await;
    ok_step(
        &app,
        &ra1,
        &c(&ids[0], "mediators"),
        json!({"mediator_id": "m-0001", "name": "李调解", "lead": true}),
    )
    .await;
    ok_step(
        &app,
        &mediator("m-0001", "R01"),
        &c(&ids[0], "sessions"),
        json!({"summary": "第一次调解", "attendees": ["张三"]}),
    )
    .await;
    ok_step(
        &app,
        &ra1,
        &c(&ids[1], "notes"),
        json!({"text": "电话联系"}),
    )
    .await;
    ok_step(
        &app,
        &ra1,
        &c(&ids[3], "decline"),
        json!({"reason": "不属于受理范围"}),
    )
    .await;
    ok_step(&app, &ra1, &c(&ids[3], "close"), json!({})).await;
    ok_step(&app, &ra2, &c(&ids[2], "accept"), json!({})).await;
    ok_step(
        &app,
        &admin(),
        &c(&ids[4], "transfer"),
        json!({"to_room_id": "R03", "reason": "属地管辖"}),
    )
    .await;

    let mut before = Vec::new();
    for id in &ids {
        before.push(snapshot(&app, id).await);
    }
    assert_eq!(before[0].version, 4);
    assert_eq!(before[0].body["status"], "in_mediation");
    assert_eq!(before[3].body["status"], "closed");
    assert_eq!(before[4].body["room_id"], "R03");
    let total = app.total_events().await;
    assert_eq!(total, 10 + 8);
    // R01 numbered 7 cases (i % 3 != 2 for i in 0..10), R02 three.
    assert_eq!(before[9].body["case_no"], format!("R01-{}-0007", year()));
    assert_eq!(before[8].body["case_no"], format!("R02-{}-0003", year()));

    app.state.store.close().await;
    drop(app);

    // Second start on the same database.
    let app = TestApp::on(backend, url.clone()).await;
    for (id, then) in ids.iter().zip(&before) {
        let now = snapshot(&app, id).await;
        assert_eq!(now, *then, "case {id} after a restart");
    }
    assert_eq!(app.total_events().await, total);
    let next = app.post("/api/v1/cases", &ra1, filing("R01")).await;
    assert_eq!(next.status, StatusCode::CREATED, "{}", next.body);
    assert_eq!(
        next.body["case_no"],
        format!("R01-{}-0008", year()),
        "no number is reused"
    );
    let next_id = next.body["case_id"].as_str().unwrap().to_string();
    // A step after the restart continues the case's sequence.
    let noted = app
        .post(&c(&ids[1], "notes"), &ra1, json!({"text": "重启后的备注"}))
        .await;
    assert_eq!(noted.status, StatusCode::OK, "{}", noted.body);
    assert_eq!(noted.body["version"], 3);
    let after_second = snapshot(&app, &ids[1]).await;
    app.state.store.close().await;
    drop(app);

    // Third start: the migrations run again and change nothing.
    let app = TestApp::on(backend, url).await;
    let expected_migrations = match backend {
        Backend::Postgres => tiaojie::store::migrations::POSTGRES.len(),
        Backend::Sqlite => tiaojie::store::migrations::SQLITE.len(),
    } as i64;
    assert_eq!(migrations_applied(&app).await, expected_migrations);
    app.state
        .store
        .migrate()
        .await
        .expect("migrating again is harmless");
    assert_eq!(migrations_applied(&app).await, expected_migrations);
    assert_eq!(app.total_events().await, total + 2);
    for (i, (id, then)) in ids.iter().zip(&before).enumerate() {
        let now = snapshot(&app, id).await;
        if i == 1 {
            assert_eq!(now, after_second);
        } else {
            assert_eq!(now, *then, "case {id} after a second restart");
        }
    }
    assert_eq!(snapshot(&app, &next_id).await.version, 1);
    let third = app.post("/api/v1/cases", &ra2, filing("R02")).await;
    assert_eq!(third.status, StatusCode::CREATED, "{}", third.body);
    assert_eq!(third.body["case_no"], format!("R02-{}-0004", year()));
    let ready = app
        .send(Method::GET, "/readyz", None, Value::Null, &[])
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
}

/// An unreachable PostgreSQL server: a quick, one-line error (no PostgreSQL server needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_fast_with_one_line() {
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        Store::connect(
            "postgres://postgres@127.0.0.1:1/x",
            PoolSettings {
                max_connections: 4,
                acquire_timeout: Duration::from_secs(3),
            },
        ),
    )
    .await
    .expect("connect gives up on its own");
    let elapsed = started.elapsed();
    let err = match result {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e,
    };
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message:?}");
    assert!(
        message.contains("127.0.0.1:1"),
        "names the server: {message}"
    );
    assert!(message.len() < 400, "short: {message}");

    // An SQLite file that cannot be created: also one line, no panic.
    let result = Store::connect(
        "sqlite:///proc/tiaojie-no-such/x.db",
        PoolSettings::default(),
    )
    .await;
    let message = match result {
        Ok(_) => panic!("opened a file under /proc"),
        Err(e) => e.to_string(),
    };
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{message:?}"
    );
}

async fn a_closed_pool_answers_503_never_500(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R06");
    let id = app.file(&ra, "R06").await;
    app.state.store.close().await;

    let check = |what: &str, reply: &Reply| {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "unavailable", "{what}");
        assert_eq!(
            reply
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/problem+json"),
            "{what}"
        );
    };
    let read = app.get(&format!("/api/v1/cases/{id}"), &ra).await;
    check("read", &read);
    let history = app.get(&format!("/api/v1/cases/{id}/history"), &ra).await;
    check("history", &history);
    let note = app
        .post(
            &format!("/api/v1/cases/{id}/notes"),
            &ra,
            json!({"text": "数据库关闭后"}),
        )
        .await;
    check("note", &note);
    let keyed = app
        .send(
            Method::POST,
            &format!("/api/v1/cases/{id}/notes"),
            Some(&ra),
            json!({"text": "带幂等键"}),
            &[("idempotency-key", "after-close-1")],
        )
        .await;
    check("keyed note", &keyed);
    let filed = app.post("/api/v1/cases", &ra, filing("R06")).await;
    check("filing", &filed);
    // Requests that fail before the store still answer as usual.
    let anonymous = app
        .send(
            Method::GET,
            &format!("/api/v1/cases/{id}"),
            None,
            Value::Null,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let ready = app
        .send(Method::GET, "/readyz", None, Value::Null, &[])
        .await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );

    // Nothing was written: a fresh store on the same database has the one filing only.
    let reopened = TestApp::on(backend, app.url.clone()).await;
    assert_eq!(reopened.total_events().await, 1);
    assert_eq!(reopened.event_count(&id).await, 1);
}

both_stores!(
    a_restarted_server_has_every_case,
    a_closed_pool_answers_503_never_500
);

//! Concurrent writers: one case's sequences stay gapless and every answer is either the write
//! (exactly one event) or 409 `version_conflict`; one idempotency key creates one case however
//! many requests race with it; concurrent filings in one room take consecutive case numbers in
//! commit order.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn year() -> String {
    chrono::Utc::now()
        .with_timezone(&tiaojie_domain::shenzhen_offset())
        .format("%Y")
        .to_string()
}

async fn concurrent_notes_on_one_case_conflict_or_append_once(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let ra = room_admin("R01");
    let id = app.file(&ra, "R01").await;

    const N: usize = 48;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let app = app.clone();
            let ra = ra.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let text = format!("并发备注-{i:02}");
                let reply = app
                    .post(
                        &format!("/api/v1/cases/{id}/notes"),
                        &ra,
                        json!({ "text": text }),
                    )
                    .await;
                (text, reply)
            })
        })
        .collect();
    let replies = futures::future::join_all(tasks).await;

    let mut written = Vec::new();
    let mut refused = Vec::new();
    let mut versions = HashSet::new();
    for joined in replies {
        let (text, reply) = joined.expect("request task");
        match reply.status {
            StatusCode::OK => {
                let version = reply.body["version"].as_u64().expect("version");
                assert!(
                    versions.insert(version),
                    "two 200s answered version {version}"
                );
                assert_eq!(
                    reply.etag().as_deref(),
                    Some(format!("\"{version}\"").as_str())
                );
                written.push(text);
            }
            StatusCode::CONFLICT => {
                assert_eq!(reply.code(), "version_conflict", "{}", reply.body);
                refused.push(text);
            }
            other => panic!("unexpected answer {other}: {}", reply.body),
        }
    }
    assert_eq!(written.len() + refused.len(), N);
    assert!(
        !written.is_empty(),
        "at least one concurrent note is written"
    );
    // The 200s answered the versions 2..=1+n, each once.
    let expected: HashSet<u64> = (2..=1 + written.len() as u64).collect();
    assert_eq!(versions, expected);

    let history = app
        .get(&format!("/api/v1/cases/{id}/history"), &admin())
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let events = history.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1 + written.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1, "no gaps in the sequence");
    }
    assert_eq!(events[0]["type"], "CaseFiled");
    let mut texts: HashMap<String, usize> = HashMap::new();
    for e in &events[1..] {
        assert_eq!(e["type"], "NoteAdded");
        let text = e["data"]["NoteAdded"]["text"].as_str().unwrap().to_string();
        *texts.entry(text).or_default() += 1;
    }
    for text in &written {
        assert_eq!(texts.get(text), Some(&1), "{text} appears exactly once");
    }
    for text in &refused {
        assert_eq!(texts.get(text), None, "{text} was refused yet recorded");
    }
    assert_eq!(app.total_events().await, 1 + written.len() as i64);

    let read = app.get(&format!("/api/v1/cases/{id}"), &ra).await;
    assert_eq!(read.body["version"], 1 + written.len() as u64);
}

async fn one_idempotency_key_creates_one_case(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let ra = room_admin("R04");
    let body = filing("R04");
    let headers = [("idempotency-key", "filing-key-0001")];

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let ra = ra.clone();
            let body = body.clone();
            tokio::spawn(async move {
                app.send(Method::POST, "/api/v1/cases", Some(&ra), body, &headers)
                    .await
            })
        })
        .collect();
    let replies: Vec<Reply> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect();
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let first = &replies[0].body;
    let case_id = first["case_id"].as_str().unwrap().to_string();
    assert_eq!(first["case_no"], format!("R04-{}-0001", year()));
    for reply in &replies {
        assert_eq!(reply.body["case_id"], first["case_id"]);
        assert_eq!(reply.body["case_no"], first["case_no"]);
        assert_eq!(reply.body, *first, "every answer is the first answer");
        assert_eq!(reply.etag().as_deref(), Some("\"1\""));
    }
    let replayed = replies
        .iter()
        .filter(|r| r.headers.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 7, "all but the one that wrote are replays");
    assert_eq!(app.total_events().await, 1);

    // A later retry gets the same answer and writes nothing.
    let retry = app
        .send(
            Method::POST,
            "/api/v1/cases",
            Some(&ra),
            body.clone(),
            &headers,
        )
        .await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body, *first);
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(
        retry.headers.get("location").map(|v| v.to_str().unwrap()),
        Some(format!("/api/v1/cases/{case_id}").as_str())
    );
    assert_eq!(app.total_events().await, 1);

    // The same key with another request is refused.
    let mut other = body.clone();
    other["summary"] = json!("另一个纠纷");
    let reused = app
        .send(Method::POST, "/api/v1/cases", Some(&ra), other, &headers)
        .await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.body
    );
    assert_eq!(reused.code(), "idempotency_key_reused");
    assert_eq!(app.total_events().await, 1);

    // Another caller's key of the same text is its own.
    let someone_else = mediator("m-0042", "R04");
    let theirs = app
        .send(
            Method::POST,
            "/api/v1/cases",
            Some(&someone_else),
            body.clone(),
            &headers,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    assert_ne!(theirs.body["case_id"], first["case_id"]);
    assert_eq!(theirs.body["case_no"], format!("R04-{}-0002", year()));
    assert_eq!(app.total_events().await, 2);
}

async fn concurrent_filings_take_consecutive_numbers_in_commit_order(backend: Backend) {
    let app = Arc::new(TestApp::start(backend).await);
    let ra = room_admin("R07");
    const N: usize = 20;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let app = app.clone();
            let ra = ra.clone();
            tokio::spawn(async move {
                let mut body = filing("R07");
                body["summary"] = json!(format!("并发立案 {i}"));
                app.post("/api/v1/cases", &ra, body).await
            })
        })
        .collect();
    let replies = futures::future::join_all(tasks).await;
    let mut number_of: HashMap<String, String> = HashMap::new();
    for joined in replies {
        let reply = joined.expect("request task");
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let id = reply.body["case_id"].as_str().unwrap().to_string();
        let no = reply.body["case_no"].as_str().unwrap().to_string();
        assert!(number_of.insert(id, no).is_none());
    }
    let year = year();
    let mut numbers: Vec<String> = number_of.values().cloned().collect();
    numbers.sort();
    let expected: Vec<String> = (1..=N).map(|n| format!("R07-{year}-{n:04}")).collect();
    assert_eq!(numbers, expected, "exactly 0001..0020, each once");

    let sql = "SELECT aggregate_id, position FROM events WHERE event_type = 'CaseFiled' ORDER BY position";
    let committed: Vec<(String, i64)> = if let Some(pool) = app.state.store.postgres_pool() {
        sqlx::query_as(sql).fetch_all(pool).await.unwrap()
    } else {
        sqlx::query_as(sql)
            .fetch_all(app.state.store.sqlite_pool().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(committed.len(), N);
    let in_commit_order: Vec<String> = committed
        .iter()
        .map(|(id, _)| number_of.get(id).expect("a filed case").clone())
        .collect();
    assert_eq!(
        in_commit_order, expected,
        "case numbers increase in commit order"
    );

    // Each case reads back with its number.
    for (id, no) in &number_of {
        let read = app.get(&format!("/api/v1/cases/{id}"), &ra).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body["case_no"], Value::String(no.clone()));
    }
}

both_stores!(
    concurrent_notes_on_one_case_conflict_or_append_once,
    one_idempotency_key_creates_one_case,
    concurrent_filings_take_consecutive_numbers_in_commit_order
);

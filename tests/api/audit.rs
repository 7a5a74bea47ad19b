//! The audit guarantees of API.md, proved against a real store on both backends: tampering by
//! direct SQL is found (API and CLI) at the exact first bad sequence; a re-chained edit passes
//! its own verify but changes the digest of an earlier-recorded position; digests are stable
//! across appends and restarts; `state?as_of…` replays exactly the right events; the event feed
//! returns every event once; and (PostgreSQL) the log reader never skips an event committed
//! behind a later one.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, Utc};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiaojie::audit::chain::{event_hash, hex, EventFields, ZERO};
use tiaojie::auth::Role;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn auditor() -> String {
    token(Role::Auditor, "aud-1", &[])
}

/// Runs one statement on the app's database; `pg` on PostgreSQL, `lite` on SQLite.
async fn exec_per(app: &TestApp, pg: &str, lite: &str) -> u64 {
    if let Some(pool) = app.state.store.postgres_pool() {
        sqlx::query(pg)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{pg}: {e}"))
            .rows_affected()
    } else {
        let pool = app.state.store.sqlite_pool().unwrap();
        sqlx::query(lite)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{lite}: {e}"))
            .rows_affected()
    }
}

/// Runs one statement valid on both stores.
async fn exec(app: &TestApp, sql: &str) -> u64 {
    exec_per(app, sql, sql).await
}

/// Every event position in the whole log, in log order (SQLite: position; PostgreSQL: the
/// writing transaction, then position).
async fn log_positions(app: &TestApp) -> Vec<i64> {
    if let Some(pool) = app.state.store.postgres_pool() {
        sqlx::query_scalar("SELECT position FROM events ORDER BY txid, position")
            .fetch_all(pool)
            .await
            .unwrap()
    } else {
        sqlx::query_scalar("SELECT position FROM events ORDER BY position")
            .fetch_all(app.state.store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/cases/{id}/history"), &admin())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["events"].as_array().unwrap().clone()
}

async fn verify(app: &TestApp, id: &str) -> Value {
    let reply = app
        .get(&format!("/api/v1/cases/{id}/verify"), &auditor())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

async fn note(app: &TestApp, token: &str, id: &str, text: &str) -> Value {
    let reply = app
        .post(
            &format!("/api/v1/cases/{id}/notes"),
            token,
            json!({ "text": text }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

async fn get_digest(app: &TestApp, position: Option<i64>) -> Value {
    let path = match position {
        Some(p) => format!("/api/v1/audit/digest?position={p}"),
        None => "/api/v1/audit/digest".to_string(),
    };
    let reply = app.get(&path, &auditor()).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    reply.body
}

/// Waits until every committed event is final (readable in the log). On SQLite that is at once;
/// on PostgreSQL an unrelated transaction elsewhere on the server may hold the log back briefly.
async fn wait_final(app: &TestApp) {
    let total = app.total_events().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.get("/api/v1/audit/digest", &auditor()).await;
        if reply.status == StatusCode::OK && reply.body["events"] == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the log never covered all {total} events: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parse_hash(text: &str) -> [u8; 32] {
    assert_eq!(text.len(), 64, "{text}");
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// Reads the whole feed (auditor, pages of `limit`), checking the paging contract on the way.
async fn read_feed(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/api/v1/events?after={a}&limit={limit}"),
            None => format!("/api/v1/events?limit={limit}"),
        };
        let reply = app.get(&path, &auditor()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        let page = reply.body["events"].as_array().unwrap().clone();
        assert!(page.len() <= limit, "a page of {} > {limit}", page.len());
        match page.last() {
            Some(last) => {
                assert_eq!(reply.body["next_after"], last["position"], "{path}");
                after = last["position"].as_i64();
                out.extend(page);
            }
            None => {
                assert_eq!(reply.body["next_after"], json!(after), "{path}");
                return out;
            }
        }
    }
}

/// A case of `n` events in R01 (filed, accepted, then notes that mention 电话), by `ra` in R01.
async fn case_of(app: &TestApp, ra: &str, n: usize) -> String {
    case_in(app, ra, "R01", n).await
}

/// A case of `n` events filed in `room` by `ra`, a room admin of it.
async fn case_in(app: &TestApp, ra: &str, room: &str, n: usize) -> String {
    let id = app.file(ra, room).await;
    let accepted = app
        .post(
            &format!("/api/v1/cases/{id}/accept"),
            ra,
            json!({"note": "材料齐全"}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    for seq in 3..=n {
        note(app, ra, &id, &format!("第{seq}次电话联系双方")).await;
    }
    assert_eq!(app.event_count(&id).await, n);
    id
}

/// Runs `tiaojie` with `args` against `url`, with a fresh data folder and the test secret.
async fn run_cli(url: &str, args: &[&str]) -> std::process::Output {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let data =
            std::env::temp_dir().join(format!("tiaojie-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tiaojie"));
        for (k, _) in std::env::vars() {
            if k.starts_with("TIAOJIE_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(&args)
            .env("TIAOJIE_DATABASE_URL", &url)
            .env("TIAOJIE_DATA_DIR", &data)
            .env("TIAOJIE_JWT_SECRET", SECRET)
            .output()
            .expect("run the tiaojie binary");
        let _ = std::fs::remove_dir_all(&data);
        out
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Tampering by direct SQL is found, through the API and the CLI.
// ---------------------------------------------------------------------------------------------

async fn direct_sql_edits_are_found_at_their_first_bad_sequence(backend: Backend) {
    const N: usize = 7;
    let app = TestApp::start(backend).await;
    let ra = room_admin("R01"); // sub "ra-1"
    let control = case_of(&app, &ra, N).await;
    let payload = case_of(&app, &ra, N).await;
    let actor = case_of(&app, &ra, N).await;
    let last = case_of(&app, &ra, N).await;
    let middle = case_of(&app, &ra, N).await;
    let swapped = case_of(&app, &ra, N).await;
    let all = [&control, &payload, &actor, &last, &middle, &swapped];

    // Untouched: every case verifies, the whole log verifies, the CLI exits 0.
    for id in all {
        let v = verify(&app, id).await;
        assert_eq!(v["valid"], true, "{id}: {v}");
        assert!(v.get("first_invalid_sequence").is_none(), "{v}");
    }
    let whole = app.get("/api/v1/audit/verify", &auditor()).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    assert_eq!(whole.body["invalid"], json!([]), "{}", whole.body);
    assert_eq!(whole.body["cases_checked"], 6);
    assert_eq!(whole.body["events_checked"], 6 * N);
    let clean = run_cli(&app.url, &["verify"]).await;
    let stdout = String::from_utf8_lossy(&clean.stdout).to_string();
    assert_eq!(
        clean.status.code(),
        Some(0),
        "untouched database: {stdout}\n{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(!stdout.contains("INVALID"), "{stdout}");
    assert!(
        stdout.contains(&format!("6 cases, {} events checked, 0 invalid", 6 * N)),
        "{stdout}"
    );

    // The edits.
    let is = |id: &str, seq: u64| format!("aggregate_id = '{id}' AND sequence = {seq}");
    // A changed payload at sequence 4.
    let n = exec_per(
        &app,
        &format!(
            "UPDATE events SET payload = replace(payload::text, '电话', '短信')::json WHERE {}",
            is(&payload, 4)
        ),
        &format!(
            "UPDATE events SET payload = replace(payload, '电话', '短信') WHERE {}",
            is(&payload, 4)
        ),
    )
    .await;
    assert_eq!(n, 1);
    let h = history(&app, &payload).await;
    assert!(
        h[3]["data"]["NoteAdded"]["text"]
            .as_str()
            .unwrap()
            .contains("短信"),
        "the payload edit took: {}",
        h[3]
    );
    // A changed actor (metadata's sub) at sequence 3.
    let n = exec_per(
        &app,
        &format!(
            "UPDATE events SET metadata = replace(metadata::text, '\"ra-1\"', '\"ra-9\"')::json WHERE {}",
            is(&actor, 3)
        ),
        &format!(
            "UPDATE events SET metadata = replace(metadata, '\"ra-1\"', '\"ra-9\"') WHERE {}",
            is(&actor, 3)
        ),
    )
    .await;
    assert_eq!(n, 1);
    let h = history(&app, &actor).await;
    assert_eq!(h[2]["actor"]["sub"], "ra-9", "the actor edit took");
    assert_eq!(h[1]["actor"]["sub"], "ra-1");
    // The last event deleted.
    assert_eq!(
        exec(
            &app,
            &format!("DELETE FROM events WHERE {}", is(&last, N as u64))
        )
        .await,
        1
    );
    // A middle event deleted.
    assert_eq!(
        exec(
            &app,
            &format!("DELETE FROM events WHERE {}", is(&middle, 4))
        )
        .await,
        1
    );
    // Sequences 5 and 6 swapped (through a temporary value: the sequence is unique per case).
    assert_eq!(
        exec(
            &app,
            &format!(
                "UPDATE events SET sequence = 1000 WHERE {}",
                is(&swapped, 5)
            )
        )
        .await,
        1
    );
    assert_eq!(
        exec(
            &app,
            &format!("UPDATE events SET sequence = 5 WHERE {}", is(&swapped, 6))
        )
        .await,
        1
    );
    assert_eq!(
        exec(
            &app,
            &format!(
                "UPDATE events SET sequence = 6 WHERE {}",
                is(&swapped, 1000)
            )
        )
        .await,
        1
    );

    let expected: BTreeMap<String, (u64, usize)> = [
        (payload.clone(), (4, N)),
        (actor.clone(), (3, N)),
        (last.clone(), (N as u64, N - 1)),
        (middle.clone(), (4, N - 1)),
        (swapped.clone(), (5, N)),
    ]
    .into_iter()
    .collect();

    // Through the API, case by case.
    for (id, (seq, checked)) in &expected {
        let v = verify(&app, id).await;
        assert_eq!(v["case_id"], id.as_str(), "{v}");
        assert_eq!(v["valid"], false, "{id}: {v}");
        assert_eq!(v["first_invalid_sequence"], *seq, "{id}: {v}");
        assert_eq!(v["events_checked"], *checked, "{id}: {v}");
    }
    let v = verify(&app, &control).await;
    assert_eq!(v["valid"], true, "{v}");
    assert!(v.get("first_invalid_sequence").is_none(), "{v}");
    assert_eq!(v["events_checked"], N);
    let h = history(&app, &control).await;
    assert_eq!(h.len(), N);
    assert_eq!(v["head_hash"], h[N - 1]["hash"], "{v}");

    // The whole log: exactly the tampered cases, with their sequences.
    let whole = app.get("/api/v1/audit/verify", &auditor()).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    let invalid: Vec<(String, u64)> = whole.body["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["case_id"].as_str().unwrap().to_string(),
                i["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = expected
        .iter()
        .map(|(id, (seq, _))| (id.clone(), *seq))
        .collect();
    assert_eq!(invalid, want, "{}", whole.body);
    assert_eq!(whole.body["cases_checked"], 6);
    assert_eq!(whole.body["events_checked"], 6 * N - 2);

    // The CLI: exit 1, each bad case with its sequence, not the control.
    let out = run_cli(&app.url, &["verify"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for (id, (seq, _)) in &expected {
        let line = format!("INVALID case {id}: first invalid sequence {seq}");
        assert_eq!(
            stdout.lines().filter(|l| *l == line).count(),
            1,
            "{line:?} in {stdout}"
        );
    }
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("INVALID")).count(),
        5,
        "{stdout}"
    );
    assert!(!stdout.contains(control.as_str()), "{stdout}");
    assert!(stderr.contains("5 case(s) failed verification"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 2. A re-chained edit passes its own verify but changes an earlier-recorded digest.
// ---------------------------------------------------------------------------------------------

/// Recomputes a case's whole chain and head from its events as stored.
async fn rechain(app: &TestApp, id: &str) {
    let events = app
        .state
        .store
        .history(uuid::Uuid::parse_str(id).unwrap())
        .await
        .unwrap();
    let mut prev = ZERO;
    for e in &events {
        let hash = event_hash(
            &prev,
            &EventFields {
                case_id: &e.case_id,
                sequence: e.sequence as u64,
                event_type: &e.event_type,
                event_version: &e.event_version,
                payload: &e.payload,
                recorded_at: &e.recorded_at,
                metadata: &e.metadata,
            },
        );
        let n = exec(
            app,
            &format!(
                "UPDATE events SET prev_hash = '{}', hash = '{}' WHERE aggregate_id = '{id}' AND sequence = {}",
                hex(&prev),
                hex(&hash),
                e.sequence
            ),
        )
        .await;
        assert_eq!(n, 1);
        prev = hash;
    }
    let n = exec(
        app,
        &format!(
            "UPDATE case_heads SET last_sequence = {}, head_hash = '{}' WHERE aggregate_id = '{id}'",
            events.len(),
            hex(&prev)
        ),
    )
    .await;
    assert_eq!(n, 1);
}

async fn a_rechained_edit_verifies_but_changes_an_earlier_digest(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R01");
    let a = app.file(&ra, "R01").await;
    let b = app.file(&ra, "R01").await;
    note(&app, &ra, &a, "电话联系申请人").await;
    note(&app, &ra, &b, "电话联系被申请人").await; // b's sequence 2: the one edited
    note(&app, &ra, &a, "电话联系双方").await;
    note(&app, &ra, &b, "电话联系双方").await;
    wait_final(&app).await;

    let recorded = get_digest(&app, None).await;
    let p = recorded["position"].as_i64().unwrap();
    assert_eq!(recorded["events"], 6);
    // An earlier position, before the edited event: its digest must not move.
    let feed = read_feed(&app, 100).await;
    let edited_at = feed
        .iter()
        .position(|e| e["case_id"] == b.as_str() && e["sequence"] == 2)
        .unwrap();
    assert!(edited_at >= 1);
    let q = feed[edited_at - 1]["position"].as_i64().unwrap();
    let before_edit = get_digest(&app, Some(q)).await;
    assert_eq!(get_digest(&app, Some(p)).await, recorded);

    // The edit, then the case's whole chain and head recomputed.
    let n = exec_per(
        &app,
        &format!("UPDATE events SET payload = replace(payload::text, '电话', '短信')::json WHERE aggregate_id = '{b}' AND sequence = 2"),
        &format!("UPDATE events SET payload = replace(payload, '电话', '短信') WHERE aggregate_id = '{b}' AND sequence = 2"),
    )
    .await;
    assert_eq!(n, 1);
    let v = verify(&app, &b).await;
    assert_eq!(v["valid"], false, "the bare edit is seen: {v}");
    assert_eq!(v["first_invalid_sequence"], 2, "{v}");
    rechain(&app, &b).await;

    // The case now passes its own verify, and so does the whole log …
    let v = verify(&app, &b).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["events_checked"], 3);
    let h = history(&app, &b).await;
    assert!(h[1]["data"]["NoteAdded"]["text"]
        .as_str()
        .unwrap()
        .contains("短信"));
    assert_eq!(v["head_hash"], h[2]["hash"]);
    let whole = app.get("/api/v1/audit/verify", &auditor()).await;
    assert_eq!(whole.body["invalid"], json!([]), "{}", whole.body);

    // … but the digest of the position recorded before the edit has changed.
    let now = get_digest(&app, Some(p)).await;
    assert_eq!(now["position"], p);
    assert_eq!(now["events"], recorded["events"]);
    assert_ne!(
        now["digest"], recorded["digest"],
        "a re-chained edit must change the digest recorded before it"
    );
    // A position before the edited event keeps its digest.
    assert_eq!(get_digest(&app, Some(q)).await, before_edit);
}

// ---------------------------------------------------------------------------------------------
// 3. The digest at a position is stable across later appends and restarts.
// ---------------------------------------------------------------------------------------------

/// The digest recomputed here from the feed's hashes: SHA-256(prev ‖ hash), in log order.
async fn digest_from_feed(app: &TestApp) -> (i64, String, usize) {
    let feed = read_feed(app, 1000).await;
    let mut digest = [0u8; 32];
    for e in &feed {
        let mut hasher = Sha256::new();
        hasher.update(digest);
        hasher.update(parse_hash(e["hash"].as_str().unwrap()));
        digest = hasher.finalize().into();
    }
    (
        feed.last().unwrap()["position"].as_i64().unwrap(),
        hex(&digest),
        feed.len(),
    )
}

async fn digest_is_stable_across_appends_and_restarts(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R01");
    assert_eq!(
        app.get("/api/v1/audit/digest", &auditor()).await.status,
        StatusCode::NOT_FOUND,
        "an empty log has no digest"
    );
    let a = case_of(&app, &ra, 4).await;
    let b = case_of(&app, &ra, 3).await;
    wait_final(&app).await;

    // The default digest covers every event, and is the chain of the log's hashes.
    let first = get_digest(&app, None).await;
    assert_eq!(first["events"], app.total_events().await);
    assert_eq!(first["events"], 7);
    let positions = log_positions(&app).await;
    assert_eq!(first["position"], *positions.last().unwrap());
    let (fp, fd, fe) = digest_from_feed(&app).await;
    assert_eq!(
        (json!(fp), json!(fd), json!(fe)),
        (
            first["position"].clone(),
            first["digest"].clone(),
            first["events"].clone()
        )
    );
    let p = first["position"].as_i64().unwrap();
    assert_eq!(get_digest(&app, Some(p)).await, first);
    let p2 = positions[2];
    let third = get_digest(&app, Some(p2)).await;
    assert_eq!(third["position"], p2);
    assert_eq!(third["events"], 3);
    assert_ne!(third["digest"], first["digest"]);

    // Later appends: new cases and notes on old ones.
    note(&app, &ra, &a, "补充材料").await;
    let c = case_in(&app, &room_admin("R02"), "R02", 3).await;
    note(&app, &ra, &b, "再次电话联系").await;
    note(&app, &room_admin("R02"), &c, "结案前回访").await;
    wait_final(&app).await;
    let later = get_digest(&app, None).await;
    assert_eq!(later["events"], app.total_events().await);
    assert_eq!(later["events"], 13);
    assert_ne!(later["digest"], first["digest"]);
    assert!(later["position"].as_i64().unwrap() > p);
    assert_eq!(get_digest(&app, Some(p)).await, first, "after appends");
    assert_eq!(get_digest(&app, Some(p2)).await, third, "after appends");

    // A restart on the same database.
    app.state.store.close().await;
    let url = app.url.clone();
    drop(app);
    let app = TestApp::on(backend, url).await;
    wait_final(&app).await;
    assert_eq!(get_digest(&app, Some(p)).await, first, "after a restart");
    assert_eq!(get_digest(&app, Some(p2)).await, third, "after a restart");
    assert_eq!(get_digest(&app, None).await, later, "after a restart");

    // Positions not in the log.
    let max = *log_positions(&app).await.iter().max().unwrap();
    for unknown in [max + 1000, 0, -1] {
        let reply = app
            .get(
                &format!("/api/v1/audit/digest?position={unknown}"),
                &auditor(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{unknown}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "not_found");
    }
    // Auditors and admins only.
    for t in [
        mediator("m-0001", "R01"),
        room_admin("R01"),
        token(Role::Dashboard, "dash-1", &[]),
    ] {
        let reply = app.get("/api/v1/audit/digest", &t).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    }
    assert_eq!(
        app.get("/api/v1/audit/digest", &admin()).await.status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// 4. `as_of_sequence` and `as_of` at every sequence of a full lifecycle.
// ---------------------------------------------------------------------------------------------

async fn state_as_of_replays_exactly_the_events_up_to_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = admin();
    let filed = app.post("/api/v1/cases", &t, filing("R01")).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    let id = filed.body["case_id"].as_str().unwrap().to_string();
    let mut bodies = vec![filed.body.clone()];
    let steps = [
        ("accept", json!({"note": "材料齐全"})),
        ("notes", json!({"text": "电话联系双方"})),
        (
            "mediators",
            json!({"mediator_id": "m-0001", "name": "李调解"}),
        ),
        (
            "sessions",
            json!({"summary": "第一次调解", "attendees": ["张三"]}),
        ),
        ("sessions", json!({"summary": "第二次调解"})),
        (
            "resolve",
            json!({"agreement": "written", "terms": "分期支付货款", "agreed_amount": "10000.00"}),
        ),
        (
            "judicial-confirmation",
            json!({"status": "requested", "court": "深圳市福田区人民法院"}),
        ),
        (
            "follow-ups",
            json!({"performance": "partial", "satisfaction": 4}),
        ),
        ("close", json!({"archive_no": "R01-卷-0001"})),
    ];
    for (path, body) in steps {
        let reply = app
            .post(&format!("/api/v1/cases/{id}/{path}"), &t, body)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_eq!(reply.body["version"], bodies.len() + 1, "{path}");
        bodies.push(reply.body);
    }
    let n_events = bodies.len();
    assert_eq!(n_events, 10);
    assert_eq!(bodies[n_events - 1]["status"], "closed");
    let state = |q: String| {
        let app = &app;
        let t = t.clone();
        let id = id.clone();
        async move { app.get(&format!("/api/v1/cases/{id}/state?{q}"), &t).await }
    };

    // as_of_sequence: the n-th answer, for every n.
    for n in 1..=n_events {
        let reply = state(format!("as_of_sequence={n}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{n}: {}", reply.body);
        assert_eq!(reply.body, bodies[n - 1], "as_of_sequence={n}");
    }

    // as_of: each event's recorded_at gives the state after every event recorded by then.
    let h = history(&app, &id).await;
    assert_eq!(h.len(), n_events);
    let texts: Vec<String> = h
        .iter()
        .map(|e| e["recorded_at"].as_str().unwrap().to_string())
        .collect();
    let rec: Vec<DateTime<Utc>> = texts
        .iter()
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
        .collect();
    assert!(rec.windows(2).all(|w| w[0] <= w[1]), "{texts:?}");
    let after = |t: DateTime<Utc>| rec.iter().filter(|r| **r <= t).count();
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    for n in 1..=n_events {
        let expected = after(rec[n - 1]);
        assert!(expected >= n);
        let reply = state(format!("as_of={}", texts[n - 1])).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}: {}",
            texts[n - 1],
            reply.body
        );
        assert_eq!(reply.body, bodies[expected - 1], "as_of={}", texts[n - 1]);
        // A microsecond before the next event: still the state after event n (or after the
        // events recorded in the same microsecond).
        if n < n_events {
            let just_before = rec[n] - ChronoDuration::microseconds(1);
            if just_before >= rec[0] {
                let expected = after(just_before);
                let reply = state(format!("as_of={}", fmt(just_before))).await;
                assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                assert_eq!(
                    reply.body,
                    bodies[expected - 1],
                    "as_of={}",
                    fmt(just_before)
                );
            }
        }
    }
    // The same instant with a Shenzhen offset.
    let shenzhen = FixedOffset::east_opt(8 * 3600).unwrap();
    let mid = rec[4].with_timezone(&shenzhen);
    let reply = state(format!(
        "as_of={}",
        mid.format("%Y-%m-%dT%H:%M:%S%.6f%:z")
            .to_string()
            .replace('+', "%2B")
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, bodies[after(rec[4]) - 1]);
    // Far in the future: the latest state.
    let reply = state("as_of=2999-01-01T00:00:00Z".into()).await;
    assert_eq!(reply.body, bodies[n_events - 1]);

    // Before the first event, sequence 0, past the last: 404.
    let before = rec[0] - ChronoDuration::microseconds(1);
    for q in [
        format!("as_of={}", fmt(before)),
        "as_of=2000-01-01T00:00:00Z".to_string(),
        "as_of_sequence=0".to_string(),
        format!("as_of_sequence={}", n_events + 1),
    ] {
        let reply = state(q.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{q}: {}", reply.body);
        assert_eq!(reply.code(), "not_found", "{q}");
    }
    // Both or neither: 422.
    for q in [
        format!("as_of={}&as_of_sequence=3", texts[2]),
        String::new(),
        "as_of=yesterday".to_string(),
    ] {
        let reply = state(q.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{q}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "validation_failed", "{q}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The event feed.
// ---------------------------------------------------------------------------------------------

async fn the_event_feed_pages_through_every_event_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let r1 = room_admin("R01");
    let r2 = room_admin("R02");
    let a = app.file(&r1, "R01").await;
    let b = app.file(&r2, "R02").await;
    note(&app, &r1, &a, "电话联系").await;
    let c = app.file(&r1, "R01").await;
    for i in 0..4 {
        note(&app, &r2, &b, &format!("备注{i}")).await;
        note(&app, &r1, &a, &format!("备注{i}")).await;
        note(&app, &r1, &c, &format!("备注{i}")).await;
    }
    wait_final(&app).await;
    let total = app.total_events().await as usize;
    assert_eq!(total, 16);

    let feed = read_feed(&app, 7).await;
    let positions: Vec<i64> = feed
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    let unique: HashSet<i64> = positions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        positions.len(),
        "no event twice: {positions:?}"
    );
    assert_eq!(
        positions,
        log_positions(&app).await,
        "every event, in log order"
    );
    if backend == Backend::Sqlite {
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    }
    // Each event as its case's history has it, and each case's events in sequence order.
    let mut by_case: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &feed {
        by_case
            .entry(e["case_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    assert_eq!(by_case.len(), 3);
    for id in [&a, &b, &c] {
        let h = history(&app, id).await;
        let f = &by_case[id.as_str()];
        assert_eq!(f.len(), h.len(), "{id}");
        for (fe, he) in f.iter().zip(&h) {
            assert_eq!(fe["sequence"], he["sequence"]);
            assert_eq!(fe["type"], he["type"]);
            assert_eq!(fe["hash"], he["hash"]);
            assert_eq!(fe["data"], he["data"]);
            assert_eq!(fe["recorded_at"], he["recorded_at"]);
        }
    }

    // Reading on from the end sees only what is appended afterwards.
    let end = *positions.last().unwrap();
    note(&app, &r1, &a, "之后的备注").await;
    wait_final(&app).await;
    let reply = app
        .get(&format!("/api/v1/events?after={end}&limit=7"), &auditor())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let page = reply.body["events"].as_array().unwrap();
    assert_eq!(page.len(), 1, "{}", reply.body);
    assert_eq!(page[0]["case_id"], a.as_str());
    assert_eq!(page[0]["sequence"], 7);

    // Auditors and admins only.
    for t in [
        mediator("m-0001", "R01"),
        room_admin("R01"),
        token(Role::Dashboard, "dash-1", &[]),
    ] {
        let reply = app.get("/api/v1/events?limit=7", &t).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert_eq!(reply.code(), "forbidden");
    }
    let reply = app.get("/api/v1/events?limit=7", &admin()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

both_stores!(
    direct_sql_edits_are_found_at_their_first_bad_sequence,
    a_rechained_edit_verifies_but_changes_an_earlier_digest,
    digest_is_stable_across_appends_and_restarts,
    state_as_of_replays_exactly_the_events_up_to_it,
    the_event_feed_pages_through_every_event_once,
);

// ---------------------------------------------------------------------------------------------
// 6. PostgreSQL: the log reader and transactions that commit out of position order.
// ---------------------------------------------------------------------------------------------

const PROBE_INSERT: &str = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, prev_hash, hash) \
     VALUES ('probe', $1, 1, 'Probe', '1', '{}'::json, '{}'::json, $2, $2) RETURNING position";

/// A reader trusting positions alone skips an event whose transaction commits after a later
/// position's; `read_log` waits for it and returns both, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_log_does_not_skip_an_event_committed_late() {
    if postgres_url().is_none() {
        return;
    }
    let app = TestApp::start(Backend::Postgres).await;
    let ra = room_admin("R01");
    case_of(&app, &ra, 3).await;
    wait_final(&app).await;
    let pool = app.state.store.postgres_pool().unwrap().clone();
    let store = app.state.store.clone();
    let zeros = "0".repeat(64);

    // Both readers catch up with the log so far.
    let mut naive_cursor: i64 = 0;
    let mut naive_seen: Vec<i64> = Vec::new();
    let naive_read = |cursor: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT position FROM events WHERE position > $1 ORDER BY position",
            )
            .bind(cursor)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let page = naive_read(naive_cursor).await;
    naive_cursor = *page.last().unwrap();
    naive_seen.extend(page);
    let ours = store.read_log(None, 1000).await.unwrap();
    assert_eq!(ours.len(), 3);
    let mut our_cursor = ours.last().map(|e| e.position);
    let mut our_seen: Vec<i64> = ours.iter().map(|e| e.position).collect();

    // Transaction A inserts first (the smaller position) and stays open.
    let mut tx_a = pool.begin().await.unwrap();
    let pos_a: i64 = sqlx::query_scalar(PROBE_INSERT)
        .bind("probe-a")
        .bind(&zeros)
        .fetch_one(&mut *tx_a)
        .await
        .unwrap();
    // B inserts after it and commits at once.
    let pos_b: i64 = sqlx::query_scalar(PROBE_INSERT)
        .bind("probe-b")
        .bind(&zeros)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(pos_b > pos_a, "B's position {pos_b} follows A's {pos_a}");

    // The naive reader sees B and moves its cursor past A's position.
    let page = naive_read(naive_cursor).await;
    assert_eq!(page, vec![pos_b]);
    naive_cursor = pos_b;
    naive_seen.extend(page);
    // Ours does not return B while A is in flight.
    let page = store.read_log(our_cursor, 50).await.unwrap();
    assert!(
        page.is_empty(),
        "read_log returned {:?} while an older transaction was open",
        page.iter().map(|e| e.position).collect::<Vec<_>>()
    );

    tx_a.commit().await.unwrap();

    // The naive reader, continuing from its cursor, never sees A.
    let page = naive_read(naive_cursor).await;
    assert!(page.is_empty(), "{page:?}");
    naive_seen.extend(page);
    assert!(!naive_seen.contains(&pos_a), "the naive reader missed A");
    assert!(naive_seen.contains(&pos_b));

    // Ours returns A and B, each once, A first (its transaction is older).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !our_seen.contains(&pos_b) {
        assert!(Instant::now() < deadline, "read_log never returned B");
        let page = store.read_log(our_cursor, 50).await.unwrap();
        if let Some(last) = page.last() {
            our_cursor = Some(last.position);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        our_seen.extend(page.iter().map(|e| e.position));
    }
    assert!(store.read_log(our_cursor, 50).await.unwrap().is_empty());
    assert_eq!(our_seen.iter().filter(|p| **p == pos_a).count(), 1);
    assert_eq!(our_seen.iter().filter(|p| **p == pos_b).count(), 1);
    assert_eq!(our_seen[3..], [pos_a, pos_b]);
    assert_eq!(our_seen.len(), 5);
}

/// 16 writers and a reader tailing the log: the reader sees every committed event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_tailing_reader_sees_every_event_once_under_concurrent_writers() {
    if postgres_url().is_none() {
        return;
    }
    const WRITERS: usize = 16;
    const COMMANDS: usize = 30;
    let app = Arc::new(TestApp::start(Backend::Postgres).await);
    // The number of committed events, once the writers are done (usize::MAX until then).
    let target = Arc::new(AtomicUsize::new(usize::MAX));

    let store = app.state.store.clone();
    let reader_target = target.clone();
    let reader = tokio::spawn(async move {
        let mut after: Option<i64> = None;
        let mut seen: Vec<(i64, String, i64)> = Vec::new();
        // A skipped event would keep the reader short of the target: give up after a while and
        // let the checks below name what is missing.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = store.read_log(after, 50).await.unwrap();
            if let Some(last) = page.last() {
                after = Some(last.position);
                seen.extend(
                    page.iter()
                        .map(|e| (e.position, e.case_id.clone(), e.sequence)),
                );
                continue;
            }
            let target = reader_target.load(Ordering::SeqCst);
            if seen.len() >= target || Instant::now() > deadline {
                // Drained: one more read finds nothing.
                let rest = store.read_log(after, 50).await.unwrap();
                seen.extend(
                    rest.iter()
                        .map(|e| (e.position, e.case_id.clone(), e.sequence)),
                );
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(if target == usize::MAX {
                2
            } else {
                20
            }))
            .await;
        }
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let room = format!("R{:02}", 1 + w % 4);
                let ra = room_admin(&room);
                let mut written = 0usize;
                let id = app.file(&ra, &room).await;
                written += 1;
                for i in 1..COMMANDS {
                    let reply = app
                        .post(
                            &format!("/api/v1/cases/{id}/notes"),
                            &ra,
                            json!({"text": format!("写入者{w}的备注{i}")}),
                        )
                        .await;
                    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
                    written += 1;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for w in futures::future::join_all(writers).await {
        written += w.expect("writer task");
    }
    assert_eq!(written, WRITERS * COMMANDS);
    let mut committed: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events ORDER BY position")
            .fetch_all(app.state.store.postgres_pool().unwrap())
            .await
            .unwrap();
    target.store(committed.len(), Ordering::SeqCst);
    let seen = reader.await.expect("reader task");
    assert_eq!(committed.len(), written);
    let mut positions: Vec<i64> = seen.iter().map(|(p, _, _)| *p).collect();
    let unique: HashSet<i64> = positions.iter().copied().collect();
    assert_eq!(unique.len(), positions.len(), "an event was read twice");
    positions.sort_unstable();
    committed.sort_unstable();
    let missing: Vec<i64> = committed
        .iter()
        .filter(|p| !unique.contains(p))
        .copied()
        .collect();
    assert!(missing.is_empty(), "the reader skipped {missing:?}");
    assert_eq!(positions, committed);
    // Each case's events came in sequence order, 1, 2, 3 …
    let mut next: HashMap<String, i64> = HashMap::new();
    for (_, case, seq) in &seen {
        let n = next.entry(case.clone()).or_insert(1);
        assert_eq!(*seq, *n, "case {case}: sequence {seq} out of order");
        *n += 1;
    }
    assert_eq!(next.len(), WRITERS);
}

//! The read side through the router: the statistics of API.md ("Statistics") on a fixed scenario
//! whose every indicator is worked out by hand, a property test against the naive recomputation
//! straight from the log, the case list ("Reading cases") and who may read what.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use tiaojie::auth::Role;
use tiaojie_projections::indicators::{naive, Cell, Indicators, Window};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The 22 indicators of API.md, in its order.
const KEYS: [&str; 22] = [
    "filed",
    "accepted",
    "declined",
    "transferred_in",
    "transferred_out",
    "resolved",
    "terminated",
    "withdrawn",
    "referred",
    "closed",
    "judicial_confirmed",
    "success_rate",
    "followed_up",
    "performed_full",
    "performance_rate",
    "mean_days_to_conclude",
    "median_days_to_conclude",
    "p90_days_to_conclude",
    "amount_in_dispute_total",
    "amount_agreed_total",
    "open",
    "overdue_open",
];

/// Compares two indicator objects key by key: numbers within 1e-9, everything else exactly.
fn assert_indicators(ctx: &str, actual: &Value, expected: &Value) {
    let obj = actual
        .as_object()
        .unwrap_or_else(|| panic!("{ctx}: not an object: {actual}"));
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort();
    let mut want: Vec<&str> = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want, "{ctx}: the indicator keys");
    for k in KEYS {
        let e = expected
            .get(k)
            .unwrap_or_else(|| panic!("{ctx}: the expectation lacks {k}"));
        let a = &actual[k];
        match (a, e) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() < 1e-9,
                    "{ctx}: {k} is {x}, expected {y}\nactual: {actual}"
                );
            }
            _ => assert_eq!(a, e, "{ctx}: {k}\nactual: {actual}"),
        }
    }
}

/// Indicators of an empty group.
fn zero() -> Value {
    json!({
        "filed": 0, "accepted": 0, "declined": 0, "transferred_in": 0, "transferred_out": 0,
        "resolved": 0, "terminated": 0, "withdrawn": 0, "referred": 0, "closed": 0,
        "judicial_confirmed": 0, "success_rate": null, "followed_up": 0, "performed_full": 0,
        "performance_rate": null, "mean_days_to_conclude": null, "median_days_to_conclude": null,
        "p90_days_to_conclude": null, "amount_in_dispute_total": "0.00",
        "amount_agreed_total": "0.00", "open": 0, "overdue_open": 0
    })
}

/// `zero()` with some indicators set.
fn with(changes: Value) -> Value {
    let mut v = zero();
    for (k, x) in changes.as_object().unwrap() {
        assert!(v.get(k).is_some(), "no indicator {k}");
        v[k] = x.clone();
    }
    v
}

async fn post_ok(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post(path, &admin(), body).await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::CREATED,
        "{path}: {} {}",
        r.status,
        r.body
    );
    r.body
}

/// Files a case (as admin) at `at` and returns its id.
async fn file_at(
    app: &TestApp,
    room: &str,
    category: &str,
    source: &str,
    amount: Option<&str>,
    at: &str,
) -> String {
    let mut b = filing(room);
    b["category"] = json!(category);
    b["source"] = json!(source);
    match amount {
        Some(a) => b["amount_in_dispute"] = json!(a),
        None => {
            b.as_object_mut().unwrap().remove("amount_in_dispute");
        }
    }
    b["occurred_at"] = json!(at);
    let body = post_ok(app, "/api/v1/cases", b).await;
    body["case_id"].as_str().unwrap().to_string()
}

/// Takes a step (as admin) at `at`.
async fn step_at(app: &TestApp, id: &str, path: &str, mut body: Value, at: &str) -> Value {
    body["occurred_at"] = json!(at);
    post_ok(app, &format!("/api/v1/cases/{id}/{path}"), body).await
}

async fn get_ok(app: &TestApp, path: &str, token: &str) -> Value {
    let r = app.get(path, token).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    r.body
}

/// The last position of the log (in log order).
async fn last_position(app: &TestApp) -> i64 {
    let p = app.state.store.read_log_last_position().await.unwrap();
    assert!(p > 0);
    p
}

/// Waits until every event written is readable from the log, then until the projector has
/// applied them all (`app.projected()`).
///
/// On PostgreSQL an event is readable only once every older transaction *in the whole cluster*
/// has ended (`txid < pg_snapshot_xmin`), so the tests running in parallel in other databases can
/// hold the newest events back for a moment; `app.projected()` alone compares the checkpoint with
/// the last *readable* position and may return too early. The tests here write one step at a
/// time, so commit order is position order and the last event is the highest position.
async fn settled(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let max: i64 = match app.state.store.postgres_pool() {
            Some(pool) => sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(pool)
                .await
                .unwrap(),
            None => sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(app.state.store.sqlite_pool().unwrap())
                .await
                .unwrap(),
        };
        let readable = app.state.store.read_log_last_position().await.unwrap();
        if readable == max {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log's last readable position stays at {readable}, the last written is {max}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.projected().await;
}

fn group<'a>(body: &'a Value, key: &str) -> &'a Value {
    let g = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {body}"));
    &g["indicators"]
}

// ---------------------------------------------------------------------------------------------
// 1. The fixed scenario, every indicator by hand.
//
// All times UTC. Shenzhen is UTC+8 (months of `monthly` are Shenzhen months).
//
// A  R01→R02 contract party_application 10000.00
//    filed 02-10T02 (R01), accepted 02-12T02 (R01), transferred R01→R02 03-05T02,
//    assigned 03-06T02, session 03-10T02, resolved 03-20T14 (R02, agreed 8000.00),
//    JC requested 03-25T02, follow-up partial 03-28T02, JC confirmed 04-02T02,
//    follow-up full 04-15T02, closed 04-20T02.
//    duration 02-12T02 → 03-20T14 = 28 d (to 03-12) + 8 d + 12 h = 36.5 d
// B  R01 labor court_referral 5000.00
//    filed 02-28T20 (= 03-01 04:00 Shenzhen), declined 03-02T02, closed 03-03T02
// C  R01 contract party_application 3000.00
//    filed 03-10T02, terminated withdrawn (from `filed`) 03-31T18 (= 04-01 02:00 Shenzhen);
//    never accepted: no duration
// D  R01 tort government_referral 20000.00
//    filed 02-01T02, accepted 02-02T02, assigned 02-03T02, terminated referred/court 03-04T08
//    duration 02-02T02 → 03-04T08 = 28 d (to 03-02) + 2 d + 6 h = 30.25 d
// E  R01 contract party_application 7000.00
//    filed 03-01T02, accepted 03-02T02, assigned 03-02T03, session 03-05T02,
//    resolved 03-12T20 (agreed 6000.00), follow-up none 03-20T02
//    duration 03-02T02 → 03-12T20 = 10 d 18 h = 10.75 d
// F  R01 contract party_application 4000.00
//    filed 02-20T02, accepted 02-25T02, assigned 02-26T02 — left open
// G  R01 membership own_initiative (no amount)
//    filed 03-20T02, accepted 03-25T02, assigned 03-25T03, session 04-10T02,
//    resolved 05-05T02 (no agreed amount), no follow-up
//    duration 03-25T02 → 05-05T02 = 31 d (to 04-25) + 10 d = 41 d
// H  R02 fees police_referral 1500.50
//    filed 03-15T02, accepted 05-20T02 — left open
// I  R02 governance party_application 2000.00
//    filed 04-01T02, accepted 04-02T02, terminated party_refused 04-04T14
//    duration 2 d 12 h = 2.5 d
// J  R25 (cluster 新材料) commercial other_referral 100.00
//    filed 03-01T23, accepted 03-02T00:00 — left open (exactly 30 d at 04-01T00: not overdue)

async fn scenario(app: &TestApp) {
    let t = |s: &str| format!("2026-{s}Z");
    // A
    let a = file_at(
        app,
        "R01",
        "contract",
        "party_application",
        Some("10000.00"),
        &t("02-10T02:00:00"),
    )
    .await;
    // D
    let d = file_at(
        app,
        "R01",
        "tort",
        "government_referral",
        Some("20000.00"),
        &t("02-01T02:00:00"),
    )
    .await;
    step_at(app, &d, "accept", json!({}), &t("02-02T02:00:00")).await;
    step_at(app, &a, "accept", json!({}), &t("02-12T02:00:00")).await;
    step_at(
        app,
        &d,
        "mediators",
        json!({"mediator_id": "m-0004"}),
        &t("02-03T02:00:00"),
    )
    .await;
    // F
    let f = file_at(
        app,
        "R01",
        "contract",
        "party_application",
        Some("4000.00"),
        &t("02-20T02:00:00"),
    )
    .await;
    step_at(app, &f, "accept", json!({}), &t("02-25T02:00:00")).await;
    step_at(
        app,
        &f,
        "mediators",
        json!({"mediator_id": "m-0006"}),
        &t("02-26T02:00:00"),
    )
    .await;
    // B
    let b = file_at(
        app,
        "R01",
        "labor",
        "court_referral",
        Some("5000.00"),
        &t("02-28T20:00:00"),
    )
    .await;
    step_at(
        app,
        &b,
        "decline",
        json!({"reason": "不属于受理范围"}),
        &t("03-02T02:00:00"),
    )
    .await;
    step_at(app, &b, "close", json!({}), &t("03-03T02:00:00")).await;
    // E
    let e = file_at(
        app,
        "R01",
        "contract",
        "party_application",
        Some("7000.00"),
        &t("03-01T02:00:00"),
    )
    .await;
    // J
    let j = file_at(
        app,
        "R25",
        "commercial",
        "other_referral",
        Some("100.00"),
        &t("03-01T23:00:00"),
    )
    .await;
    step_at(app, &j, "accept", json!({}), &t("03-02T00:00:00")).await;
    step_at(app, &e, "accept", json!({}), &t("03-02T02:00:00")).await;
    step_at(
        app,
        &e,
        "mediators",
        json!({"mediator_id": "m-0005"}),
        &t("03-02T03:00:00"),
    )
    .await;
    step_at(
        app,
        &d,
        "terminate",
        json!({"reason": "referred", "referred_to": "court"}),
        &t("03-04T08:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "transfer",
        json!({"to_room_id": "R02", "reason": "属地管辖"}),
        &t("03-05T02:00:00"),
    )
    .await;
    step_at(
        app,
        &e,
        "sessions",
        json!({"summary": "第一次调解"}),
        &t("03-05T02:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "mediators",
        json!({"mediator_id": "m-0001"}),
        &t("03-06T02:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "sessions",
        json!({"summary": "第一次调解"}),
        &t("03-10T02:00:00"),
    )
    .await;
    // C
    let c = file_at(
        app,
        "R01",
        "contract",
        "party_application",
        Some("3000.00"),
        &t("03-10T02:00:00"),
    )
    .await;
    step_at(
        app,
        &e,
        "resolve",
        json!({"agreement": "written", "terms": "分期付款", "agreed_amount": "6000.00"}),
        &t("03-12T20:00:00"),
    )
    .await;
    // H
    let h = file_at(
        app,
        "R02",
        "fees",
        "police_referral",
        Some("1500.50"),
        &t("03-15T02:00:00"),
    )
    .await;
    // G
    let g = file_at(
        app,
        "R01",
        "membership",
        "own_initiative",
        None,
        &t("03-20T02:00:00"),
    )
    .await;
    step_at(
        app,
        &e,
        "follow-ups",
        json!({"performance": "none"}),
        &t("03-20T02:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "resolve",
        json!({"agreement": "written", "terms": "退还货款", "agreed_amount": "8000.00"}),
        &t("03-20T14:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "judicial-confirmation",
        json!({"status": "requested", "court": "深圳市福田区人民法院"}),
        &t("03-25T02:00:00"),
    )
    .await;
    step_at(app, &g, "accept", json!({}), &t("03-25T02:00:00")).await;
    step_at(
        app,
        &g,
        "mediators",
        json!({"mediator_id": "m-0007"}),
        &t("03-25T03:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "follow-ups",
        json!({"performance": "partial", "satisfaction": 3}),
        &t("03-28T02:00:00"),
    )
    .await;
    step_at(
        app,
        &c,
        "terminate",
        json!({"reason": "withdrawn"}),
        &t("03-31T18:00:00"),
    )
    .await;
    // I
    let i = file_at(
        app,
        "R02",
        "governance",
        "party_application",
        Some("2000.00"),
        &t("04-01T02:00:00"),
    )
    .await;
    step_at(app, &i, "accept", json!({}), &t("04-02T02:00:00")).await;
    step_at(
        app,
        &a,
        "judicial-confirmation",
        json!({"status": "confirmed"}),
        &t("04-02T02:00:00"),
    )
    .await;
    step_at(
        app,
        &i,
        "terminate",
        json!({"reason": "party_refused"}),
        &t("04-04T14:00:00"),
    )
    .await;
    step_at(
        app,
        &g,
        "sessions",
        json!({"summary": "第一次调解"}),
        &t("04-10T02:00:00"),
    )
    .await;
    step_at(
        app,
        &a,
        "follow-ups",
        json!({"performance": "full", "satisfaction": 5}),
        &t("04-15T02:00:00"),
    )
    .await;
    step_at(app, &a, "close", json!({}), &t("04-20T02:00:00")).await;
    step_at(
        app,
        &g,
        "resolve",
        json!({"agreement": "oral", "terms": "恢复会员资格"}),
        &t("05-05T02:00:00"),
    )
    .await;
    step_at(app, &h, "accept", json!({}), &t("05-20T02:00:00")).await;
}

/// W1 = [2026-03-01T00Z, 2026-04-01T00Z).
const W1: &str = "from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z";
/// All time, as of 2026-06-01T00Z (after the last event).
const W2: &str = "to=2026-06-01T00:00:00Z";

fn r01_w1() -> Value {
    json!({
        // C1 03-10, E1 03-01, G1 03-20 (B1 02-28T20Z is before `from`)
        "filed": 3,
        // E2 03-02, G2 03-25
        "accepted": 2,
        // B2
        "declined": 1,
        "transferred_in": 0,
        // A3 03-05 leaves R01
        "transferred_out": 1,
        // E5 03-12
        "resolved": 1,
        // D4 03-04 (referred), C2 03-31T18Z (withdrawn)
        "terminated": 2,
        "withdrawn": 1,
        "referred": 1,
        // B3
        "closed": 1,
        "judicial_confirmed": 0,
        // 1 / (1 + 2)
        "success_rate": 1.0 / 3.0,
        // E5's latest visit before `to`: none (03-20)
        "followed_up": 1,
        "performed_full": 0,
        "performance_rate": 0.0,
        // accepted cases concluded: E 10.75, D 30.25 (C never accepted)
        // mean (10.75 + 30.25) / 2 = 20.5; median rank 0.5 → 20.5;
        // p90 rank 0.9 → 10.75 + 0.9 × 19.5 = 28.3
        "mean_days_to_conclude": 20.5,
        "median_days_to_conclude": 20.5,
        "p90_days_to_conclude": 28.3,
        // C 3000 + E 7000 + G none
        "amount_in_dispute_total": "10000.00",
        // E 6000
        "amount_agreed_total": "6000.00",
        // at 04-01T00Z: F (accepted 02-25T02, 34.9 d: overdue), G (accepted 03-25, 6.9 d)
        "open": 2,
        "overdue_open": 1
    })
}

fn r02_w1() -> Value {
    json!({
        // H1 03-15 (I1 04-01T02 is after `to`)
        "filed": 1,
        "accepted": 0,
        "declined": 0,
        // A3
        "transferred_in": 1,
        "transferred_out": 0,
        // A6 03-20 (in R02, where A is then)
        "resolved": 1,
        "terminated": 0,
        "withdrawn": 0,
        "referred": 0,
        // A11 04-20 is after `to`
        "closed": 0,
        // A9 04-02 is after `to`
        "judicial_confirmed": 0,
        // 1 / (1 + 0)
        "success_rate": 1.0,
        // A's latest visit before 04-01: partial (03-28); full (04-15) is later
        "followed_up": 1,
        "performed_full": 0,
        "performance_rate": 0.0,
        // A 36.5 alone
        "mean_days_to_conclude": 36.5,
        "median_days_to_conclude": 36.5,
        "p90_days_to_conclude": 36.5,
        "amount_in_dispute_total": "1500.50",
        "amount_agreed_total": "8000.00",
        // H not accepted before `to`; A concluded
        "open": 0,
        "overdue_open": 0
    })
}

fn r25_w1() -> Value {
    // J: filed 03-01T23Z, accepted 03-02T00Z; open at 04-01T00Z for exactly 30 d: not overdue
    with(json!({"filed": 1, "accepted": 1, "amount_in_dispute_total": "100.00", "open": 1}))
}

/// R01 + R02 in W1 (the "unclustered" cluster).
fn unclustered_w1() -> Value {
    json!({
        // 3 + 1
        "filed": 4,
        "accepted": 2,
        "declined": 1,
        "transferred_in": 1,
        "transferred_out": 1,
        // E5 + A6
        "resolved": 2,
        "terminated": 2,
        "withdrawn": 1,
        "referred": 1,
        "closed": 1,
        "judicial_confirmed": 0,
        // 2 / 4
        "success_rate": 0.5,
        "followed_up": 2,
        "performed_full": 0,
        "performance_rate": 0.0,
        // [10.75, 30.25, 36.5]: mean 77.5 / 3 = 25.8333…; median 30.25;
        // p90 rank 0.9 × 2 = 1.8 → 30.25 + 0.8 × (36.5 − 30.25) = 35.25
        "mean_days_to_conclude": 77.5 / 3.0,
        "median_days_to_conclude": 30.25,
        "p90_days_to_conclude": 35.25,
        // 10000.00 + 1500.50
        "amount_in_dispute_total": "11500.50",
        // 6000 + 8000
        "amount_agreed_total": "14000.00",
        "open": 2,
        "overdue_open": 1
    })
}

fn totals_w1() -> Value {
    let mut v = unclustered_w1();
    // + J (R25): filed 5, accepted 3, amount + 100.00, open 3 (J not overdue)
    v["filed"] = json!(5);
    v["accepted"] = json!(3);
    v["amount_in_dispute_total"] = json!("11600.50");
    v["open"] = json!(3);
    v
}

fn contract_w1() -> Value {
    json!({
        // C1, E1 (A1, F1 filed in February)
        "filed": 2,
        // E2
        "accepted": 1,
        "declined": 0,
        // A3 counts out of R01 and into R02, both contract
        "transferred_in": 1,
        "transferred_out": 1,
        // E5, A6
        "resolved": 2,
        // C2
        "terminated": 1,
        "withdrawn": 1,
        "referred": 0,
        "closed": 0,
        "judicial_confirmed": 0,
        // 2 / 3
        "success_rate": 2.0 / 3.0,
        // E none, A partial
        "followed_up": 2,
        "performed_full": 0,
        "performance_rate": 0.0,
        // [10.75, 36.5]: mean 23.625; median 23.625; p90 10.75 + 0.9 × 25.75 = 33.925
        "mean_days_to_conclude": 23.625,
        "median_days_to_conclude": 23.625,
        "p90_days_to_conclude": 33.925,
        // C 3000 + E 7000
        "amount_in_dispute_total": "10000.00",
        "amount_agreed_total": "14000.00",
        // F
        "open": 1,
        "overdue_open": 1
    })
}

fn r01_w2() -> Value {
    json!({
        // A B C D E F G
        "filed": 7,
        // A D E F G
        "accepted": 5,
        "declined": 1,
        "transferred_in": 0,
        "transferred_out": 1,
        // E5, G5
        "resolved": 2,
        // C2, D4
        "terminated": 2,
        "withdrawn": 1,
        "referred": 1,
        // B3
        "closed": 1,
        "judicial_confirmed": 0,
        // 2 / 4
        "success_rate": 0.5,
        // E (none); G has no visit
        "followed_up": 1,
        "performed_full": 0,
        "performance_rate": 0.0,
        // [10.75, 30.25, 41]: mean 82 / 3 = 27.333…; median 30.25;
        // p90 rank 1.8 → 30.25 + 0.8 × 10.75 = 38.85
        "mean_days_to_conclude": 82.0 / 3.0,
        "median_days_to_conclude": 30.25,
        "p90_days_to_conclude": 38.85,
        // 10000 + 5000 + 3000 + 20000 + 7000 + 4000
        "amount_in_dispute_total": "49000.00",
        // E 6000 (G none)
        "amount_agreed_total": "6000.00",
        // at 06-01: F (accepted 02-25: overdue)
        "open": 1,
        "overdue_open": 1
    })
}

fn r02_w2() -> Value {
    json!({
        // H, I
        "filed": 2,
        // H2, I2
        "accepted": 2,
        "declined": 0,
        "transferred_in": 1,
        "transferred_out": 0,
        // A6
        "resolved": 1,
        // I3 (party_refused)
        "terminated": 1,
        "withdrawn": 0,
        "referred": 0,
        // A11
        "closed": 1,
        // A9
        "judicial_confirmed": 1,
        // 1 / 2
        "success_rate": 0.5,
        // A's latest visit before 06-01: full (04-15)
        "followed_up": 1,
        "performed_full": 1,
        "performance_rate": 1.0,
        // [2.5, 36.5]: mean 19.5; median 19.5; p90 2.5 + 0.9 × 34 = 33.1
        "mean_days_to_conclude": 19.5,
        "median_days_to_conclude": 19.5,
        "p90_days_to_conclude": 33.1,
        // 1500.50 + 2000.00
        "amount_in_dispute_total": "3500.50",
        "amount_agreed_total": "8000.00",
        // H accepted 05-20: 12 d
        "open": 1,
        "overdue_open": 0
    })
}

fn r25_w2() -> Value {
    // J open at 06-01 since 03-02: overdue
    with(
        json!({"filed": 1, "accepted": 1, "amount_in_dispute_total": "100.00", "open": 1, "overdue_open": 1}),
    )
}

fn totals_w2() -> Value {
    json!({
        // 7 + 2 + 1
        "filed": 10,
        // 5 + 2 + 1
        "accepted": 8,
        "declined": 1,
        "transferred_in": 1,
        "transferred_out": 1,
        // E, G, A
        "resolved": 3,
        // C, D, I
        "terminated": 3,
        "withdrawn": 1,
        "referred": 1,
        // B, A
        "closed": 2,
        "judicial_confirmed": 1,
        // 3 / 6
        "success_rate": 0.5,
        // E none, A full
        "followed_up": 2,
        "performed_full": 1,
        "performance_rate": 0.5,
        // [2.5, 10.75, 30.25, 36.5, 41]: sum 121, mean 24.2; median 30.25;
        // p90 rank 0.9 × 4 = 3.6 → 36.5 + 0.6 × 4.5 = 39.2
        "mean_days_to_conclude": 24.2,
        "median_days_to_conclude": 30.25,
        "p90_days_to_conclude": 39.2,
        // 49000.00 + 3500.50 + 100.00
        "amount_in_dispute_total": "52600.50",
        "amount_agreed_total": "14000.00",
        // F (overdue), H, J (overdue)
        "open": 3,
        "overdue_open": 2
    })
}

fn contract_w2() -> Value {
    json!({
        // A C E F
        "filed": 4,
        // A E F
        "accepted": 3,
        "declined": 0,
        "transferred_in": 1,
        "transferred_out": 1,
        // A E
        "resolved": 2,
        // C
        "terminated": 1,
        "withdrawn": 1,
        "referred": 0,
        // A
        "closed": 1,
        // A
        "judicial_confirmed": 1,
        "success_rate": 2.0 / 3.0,
        // A full, E none
        "followed_up": 2,
        "performed_full": 1,
        "performance_rate": 0.5,
        // [10.75, 36.5] as in W1
        "mean_days_to_conclude": 23.625,
        "median_days_to_conclude": 23.625,
        "p90_days_to_conclude": 33.925,
        // 10000 + 3000 + 7000 + 4000
        "amount_in_dispute_total": "24000.00",
        "amount_agreed_total": "14000.00",
        // F
        "open": 1,
        "overdue_open": 1
    })
}

async fn fixed_scenario_every_indicator(backend: Backend) {
    let app = TestApp::start(backend).await;
    scenario(&app).await;
    settled(&app).await;
    let last = last_position(&app).await;
    let dash = token(Role::Dashboard, "dash-1", &[]);
    let rooms_with_cases = ["R01", "R02", "R25"];

    // --- W1 by room
    let s = get_ok(
        &app,
        &format!("/api/v1/statistics?{W1}&group_by=room"),
        &dash,
    )
    .await;
    assert_eq!(
        s["as_of_position"], last,
        "as_of_position is the log's last position"
    );
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 30, "one group per registry room");
    assert_indicators("W1 R01", group(&s, "R01"), &r01_w1());
    assert_indicators("W1 R02", group(&s, "R02"), &r02_w1());
    assert_indicators("W1 R25", group(&s, "R25"), &r25_w1());
    for g in groups {
        if !rooms_with_cases.contains(&g["key"].as_str().unwrap()) {
            assert_indicators(&format!("W1 {}", g["key"]), &g["indicators"], &zero());
        }
    }
    assert_indicators("W1 totals", &s["totals"], &totals_w1());
    // The default grouping is by room.
    let default = get_ok(&app, &format!("/api/v1/statistics?{W1}"), &dash).await;
    assert_eq!(default["groups"], s["groups"]);

    // --- W1 by category
    let s = get_ok(
        &app,
        &format!("/api/v1/statistics?{W1}&group_by=category"),
        &dash,
    )
    .await;
    assert_eq!(s["groups"].as_array().unwrap().len(), 9);
    assert_indicators("W1 contract", group(&s, "contract"), &contract_w1());
    // B: filed 02-28T20Z (before `from`), declined and closed in W1
    assert_indicators(
        "W1 labor",
        group(&s, "labor"),
        &with(json!({"declined": 1, "closed": 1})),
    );
    // D: terminated (referred) 03-04, 30.25 d; success 0 / 1
    assert_indicators(
        "W1 tort",
        group(&s, "tort"),
        &with(json!({"terminated": 1, "referred": 1, "success_rate": 0.0,
            "mean_days_to_conclude": 30.25, "median_days_to_conclude": 30.25,
            "p90_days_to_conclude": 30.25})),
    );
    // G: filed, accepted 03-25; open at 04-01, 7 d
    assert_indicators(
        "W1 membership",
        group(&s, "membership"),
        &with(json!({"filed": 1, "accepted": 1, "open": 1})),
    );
    // H: filed 03-15
    assert_indicators(
        "W1 fees",
        group(&s, "fees"),
        &with(json!({"filed": 1, "amount_in_dispute_total": "1500.50"})),
    );
    assert_indicators("W1 commercial", group(&s, "commercial"), &r25_w1());
    for c in ["governance", "intellectual_property", "other"] {
        assert_indicators(&format!("W1 {c}"), group(&s, c), &zero());
    }
    assert_indicators("W1 totals by category", &s["totals"], &totals_w1());

    // --- W1 by cluster: R25 is 新材料, R01 and R02 have none
    let s = get_ok(
        &app,
        &format!("/api/v1/statistics?{W1}&group_by=cluster"),
        &dash,
    )
    .await;
    assert_indicators("W1 新材料", group(&s, "新材料"), &r25_w1());
    assert_indicators(
        "W1 unclustered",
        group(&s, "unclustered"),
        &unclustered_w1(),
    );
    for g in s["groups"].as_array().unwrap() {
        if g["key"] != "新材料" && g["key"] != "unclustered" {
            assert_indicators(&format!("W1 {}", g["key"]), &g["indicators"], &zero());
        }
    }
    assert_indicators("W1 totals by cluster", &s["totals"], &totals_w1());

    // --- W1 shifted to Shenzhen midnights: [02-28T16Z, 03-31T16Z) takes in B1 (02-28T20Z) and
    // leaves out C2 (03-31T18Z). The `+` must be percent-encoded in a query.
    let s = get_ok(
        &app,
        "/api/v1/statistics?from=2026-03-01T00:00:00%2B08:00&to=2026-04-01T00:00:00%2B08:00",
        &dash,
    )
    .await;
    let r01 = group(&s, "R01");
    // B1 C1 E1 G1
    assert_eq!(r01["filed"], 4);
    // 5000 + 3000 + 7000
    assert_eq!(r01["amount_in_dispute_total"], "15000.00");
    // D4 only
    assert_eq!(r01["terminated"], 1);
    assert_eq!(r01["withdrawn"], 0);
    // at 03-31T16Z: F (34.6 d, overdue) and G; C was never accepted
    assert_eq!(r01["open"], 2);
    assert_eq!(r01["overdue_open"], 1);

    // --- as of 03-04T04Z, before A's transfer (03-05) and D's termination (03-04T08): open are
    // A (R01, 20 d), D (R01, 02-02T02 → 03-04T04 = 30 d 2 h: overdue), E (R01, 2 d),
    // F (R01, 7 d) and J (R25, 2 d). A is counted in R01, where it is at `to`, not in R02.
    let s = get_ok(&app, "/api/v1/statistics?to=2026-03-04T04:00:00Z", &dash).await;
    let open = |room: &str| {
        (
            group(&s, room)["open"].clone(),
            group(&s, room)["overdue_open"].clone(),
        )
    };
    assert_eq!(open("R01"), (json!(4), json!(1)));
    assert_eq!(open("R02"), (json!(0), json!(0)));
    assert_eq!(open("R25"), (json!(1), json!(0)));
    assert_eq!(
        (
            s["totals"]["open"].clone(),
            s["totals"]["overdue_open"].clone()
        ),
        (json!(5), json!(1))
    );
    // filed by then: A D F B E in R01, J in R25
    assert_eq!(group(&s, "R01")["filed"], 5);
    assert_eq!(s["totals"]["filed"], 6);

    // --- all time (to 06-01)
    let s = get_ok(
        &app,
        &format!("/api/v1/statistics?{W2}&group_by=room"),
        &dash,
    )
    .await;
    assert_eq!(s["as_of_position"], last);
    assert_indicators("W2 R01", group(&s, "R01"), &r01_w2());
    assert_indicators("W2 R02", group(&s, "R02"), &r02_w2());
    assert_indicators("W2 R25", group(&s, "R25"), &r25_w2());
    for g in s["groups"].as_array().unwrap() {
        if !rooms_with_cases.contains(&g["key"].as_str().unwrap()) {
            assert_indicators(&format!("W2 {}", g["key"]), &g["indicators"], &zero());
        }
    }
    assert_indicators("W2 totals", &s["totals"], &totals_w2());
    let s = get_ok(
        &app,
        &format!("/api/v1/statistics?{W2}&group_by=category"),
        &dash,
    )
    .await;
    assert_indicators("W2 contract", group(&s, "contract"), &contract_w2());
    // I: party_refused after 2.5 d
    assert_indicators(
        "W2 governance",
        group(&s, "governance"),
        &with(
            json!({"filed": 1, "accepted": 1, "terminated": 1, "success_rate": 0.0,
            "mean_days_to_conclude": 2.5, "median_days_to_conclude": 2.5,
            "p90_days_to_conclude": 2.5, "amount_in_dispute_total": "2000.00"}),
        ),
    );
    assert_indicators("W2 totals by category", &s["totals"], &totals_w2());

    // --- the room detail of R01
    let d = get_ok(&app, &format!("/api/v1/rooms/R01/statistics?{W1}"), &dash).await;
    assert_eq!(d["room_id"], "R01");
    assert_eq!(d["as_of_position"], last);
    assert_indicators("W1 detail R01", &d["indicators"], &r01_w1());
    // filed in W1: C, E contract; G membership
    assert_eq!(
        d["by_category"],
        json!({"membership": 1, "governance": 0, "contract": 2, "labor": 0,
            "intellectual_property": 0, "fees": 0, "commercial": 0, "tort": 0, "other": 0})
    );
    assert_eq!(
        d["by_source"],
        json!({"party_application": 2, "own_initiative": 1, "court_referral": 0,
            "government_referral": 0, "police_referral": 0, "other_referral": 0})
    );
    // Shenzhen months: C1 E1 G1 filed, E5 resolved (03-13 04:00 Shenzhen), D4 terminated in
    // March; C2 (03-31T18Z) is 04-01 02:00 in Shenzhen
    assert_eq!(
        d["monthly"],
        json!([
            {"month": "2026-03", "filed": 3, "resolved": 1, "terminated": 1},
            {"month": "2026-04", "filed": 0, "resolved": 0, "terminated": 1}
        ])
    );
    let d = get_ok(&app, &format!("/api/v1/rooms/R01/statistics?{W2}"), &dash).await;
    assert_indicators("W2 detail R01", &d["indicators"], &r01_w2());
    assert_eq!(
        d["by_category"],
        json!({"membership": 1, "governance": 0, "contract": 4, "labor": 1,
            "intellectual_property": 0, "fees": 0, "commercial": 0, "tort": 1, "other": 0})
    );
    assert_eq!(
        d["by_source"],
        json!({"party_application": 4, "own_initiative": 1, "court_referral": 1,
            "government_referral": 1, "police_referral": 0, "other_referral": 0})
    );
    // filed: Feb A D F; Mar B (03-01 04:00 Shenzhen) C E G; resolved E (Mar), G (May);
    // terminated D (Mar), C (Apr in Shenzhen)
    assert_eq!(
        d["monthly"],
        json!([
            {"month": "2026-02", "filed": 3, "resolved": 0, "terminated": 0},
            {"month": "2026-03", "filed": 4, "resolved": 1, "terminated": 1},
            {"month": "2026-04", "filed": 0, "resolved": 0, "terminated": 1},
            {"month": "2026-05", "filed": 0, "resolved": 1, "terminated": 0}
        ])
    );
    let d = get_ok(&app, &format!("/api/v1/rooms/R02/statistics?{W2}"), &dash).await;
    assert_indicators("W2 detail R02", &d["indicators"], &r02_w2());
    // H fees police_referral; I governance party_application (A was filed in R01)
    assert_eq!(d["by_category"]["fees"], 1);
    assert_eq!(d["by_category"]["governance"], 1);
    assert_eq!(d["by_category"]["contract"], 0);
    assert_eq!(d["by_source"]["police_referral"], 1);
    assert_eq!(d["by_source"]["party_application"], 1);

    // --- the CSV
    let r = app
        .get(&format!("/api/v1/statistics.csv?{W1}"), &dash)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.body.as_str().expect("CSV text").to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 31, "a header and 30 rooms:\n{text}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(&header[..4], &["room_id", "name", "kind", "cluster"]);
    assert_eq!(&header[4..], &KEYS[..]);
    let row = |room: &str| -> HashMap<String, String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{room},")))
            .unwrap_or_else(|| panic!("no row for {room}"));
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        header
            .iter()
            .zip(cells)
            .map(|(h, c)| (h.to_string(), c.to_string()))
            .collect()
    };
    let check_row = |room: &str, expected: &Value| {
        let row = row(room);
        for k in KEYS {
            let cell = &row[k];
            match &expected[k] {
                Value::Null => assert_eq!(cell, "", "CSV {room} {k}"),
                Value::String(s) => assert_eq!(cell, s, "CSV {room} {k}"),
                Value::Number(n) if n.is_f64() => {
                    let x: f64 = cell
                        .parse()
                        .unwrap_or_else(|_| panic!("CSV {room} {k}: {cell}"));
                    assert!(
                        (x - n.as_f64().unwrap()).abs() < 1e-9,
                        "CSV {room} {k}: {cell}"
                    );
                }
                other => assert_eq!(cell, &other.to_string(), "CSV {room} {k}"),
            }
        }
        row
    };
    let r01 = check_row("R01", &r01_w1());
    assert_eq!(r01["name"], "深圳市前海一带一路法律服务联合会调解室");
    assert_eq!(r01["kind"], "first_batch");
    assert_eq!(r01["cluster"], "");
    let r25 = check_row("R25", &r25_w1());
    assert_eq!(r25["cluster"], "新材料");
    assert_eq!(r25["kind"], "domain");
    check_row("R30", &zero());
    let rooms: HashSet<String> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    assert_eq!(rooms.len(), 30);
}

// ---------------------------------------------------------------------------------------------
// 2. Property: the projection equals the naive recomputation from the log.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ROOMS: [&str; 4] = ["R01", "R02", "R21", "R25"];
const CATEGORIES: [&str; 9] = [
    "membership",
    "governance",
    "contract",
    "labor",
    "intellectual_property",
    "fees",
    "commercial",
    "tort",
    "other",
];
const SOURCES: [&str; 6] = [
    "party_application",
    "own_initiative",
    "court_referral",
    "government_referral",
    "police_referral",
    "other_referral",
];

/// The test's own model of a case, to choose only valid steps.
struct Sim {
    id: String,
    status: &'static str,
    room: &'static str,
    at: DateTime<Utc>,
    mediators: Vec<String>,
    next_mediator: u32,
    resolved_at: Option<DateTime<Utc>>,
    jc: Option<&'static str>,
    /// Steps still to take; a case whose budget is spent is left where it is (often open).
    budget: u32,
}

fn rfc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// One random valid step on `sim` through the API (as admin); `false` when none is possible.
async fn random_step(app: &TestApp, rng: &mut Rng, sim: &mut Sim, cap: DateTime<Utc>) -> bool {
    let delta = if rng.chance(15) {
        Duration::zero()
    } else {
        // microseconds, as the read models keep them
        Duration::nanoseconds(rng.below(12 * 86_400 * 1_000_000_000) as i64)
    };
    let at = (sim.at + delta).min(cap).max(sim.at);
    let mut options: Vec<&str> = Vec::new();
    match sim.status {
        "filed" => options.extend([
            "accept",
            "accept",
            "accept",
            "decline",
            "early_end",
            "transfer",
            "note",
        ]),
        "accepted" => options.extend(["assign", "assign", "assign", "early_end", "transfer"]),
        "assigned" => {
            options.extend(["assign", "session", "session", "session", "end", "transfer"]);
            if sim.mediators.len() > 1 {
                options.push("recuse");
            }
        }
        "in_mediation" => {
            options.extend(["session", "resolve", "resolve", "resolve", "end", "assign"]);
            if sim.mediators.len() > 1 {
                options.push("recuse");
            }
        }
        "resolved" => {
            options.extend(["follow_up", "follow_up", "close"]);
            match sim.jc {
                None if at <= sim.resolved_at.unwrap() + Duration::days(30) => {
                    options.push("jc_request")
                }
                Some("requested") => options.push("jc_decide"),
                _ => {}
            }
        }
        "terminated" | "declined" => options.extend(["close", "note"]),
        _ => return false,
    }
    let action = *rng.pick(&options);
    let (path, body, status): (String, Value, &'static str) = match action {
        "accept" => ("accept".into(), json!({}), "accepted"),
        "decline" => ("decline".into(), json!({"reason": "不予受理"}), "declined"),
        "early_end" => (
            "terminate".into(),
            json!({"reason": rng.pick(&["withdrawn", "party_refused"])}),
            "terminated",
        ),
        "end" => {
            let reason = *rng.pick(&["no_agreement", "party_refused", "withdrawn", "referred"]);
            let body = if reason == "referred" {
                json!({"reason": reason, "referred_to": rng.pick(&["court", "arbitration", "administrative", "other"])})
            } else {
                json!({"reason": reason})
            };
            ("terminate".into(), body, "terminated")
        }
        "transfer" => {
            let others: Vec<&'static str> =
                ROOMS.iter().copied().filter(|r| *r != sim.room).collect();
            let to = *rng.pick(&others);
            sim.room = to;
            (
                "transfer".into(),
                json!({"to_room_id": to, "reason": "移送"}),
                sim.status,
            )
        }
        "note" => ("notes".into(), json!({"text": "备注"}), sim.status),
        "assign" => {
            sim.next_mediator += 1;
            let m = format!("m-{}", sim.next_mediator);
            sim.mediators.push(m.clone());
            let status = if sim.status == "accepted" {
                "assigned"
            } else {
                sim.status
            };
            ("mediators".into(), json!({"mediator_id": m}), status)
        }
        "recuse" => {
            let m = sim.mediators.remove(0);
            (
                format!("mediators/{m}/recuse"),
                json!({"reason": "回避"}),
                sim.status,
            )
        }
        "session" => (
            "sessions".into(),
            json!({"summary": "调解"}),
            "in_mediation",
        ),
        "resolve" => {
            sim.resolved_at = Some(at);
            let mut body = json!({"agreement": "written", "terms": "协议"});
            if rng.chance(70) {
                body["agreed_amount"] =
                    json!(format!("{}.{:02}", rng.below(50_000), rng.below(100)));
            }
            ("resolve".into(), body, "resolved")
        }
        "jc_request" => {
            sim.jc = Some("requested");
            (
                "judicial-confirmation".into(),
                json!({"status": "requested"}),
                "resolved",
            )
        }
        "jc_decide" => {
            let s = *rng.pick(&["confirmed", "rejected"]);
            sim.jc = Some(s);
            (
                "judicial-confirmation".into(),
                json!({"status": s}),
                "resolved",
            )
        }
        "follow_up" => (
            "follow-ups".into(),
            json!({"performance": rng.pick(&["full", "partial", "none"])}),
            "resolved",
        ),
        "close" => ("close".into(), json!({}), "closed"),
        other => unreachable!("{other}"),
    };
    step_at(app, &sim.id, &path, body, &rfc(at)).await;
    sim.status = status;
    sim.at = at;
    true
}

/// The indicators as the API writes them.
fn expected_json(i: &Indicators) -> Value {
    let yuan = |fen: u64| format!("{}.{:02}", fen / 100, fen % 100);
    json!({
        "filed": i.filed, "accepted": i.accepted, "declined": i.declined,
        "transferred_in": i.transferred_in, "transferred_out": i.transferred_out,
        "resolved": i.resolved, "terminated": i.terminated, "withdrawn": i.withdrawn,
        "referred": i.referred, "closed": i.closed, "judicial_confirmed": i.judicial_confirmed,
        "success_rate": i.success_rate, "followed_up": i.followed_up,
        "performed_full": i.performed_full, "performance_rate": i.performance_rate,
        "mean_days_to_conclude": i.mean_days_to_conclude,
        "median_days_to_conclude": i.median_days_to_conclude,
        "p90_days_to_conclude": i.p90_days_to_conclude,
        "amount_in_dispute_total": yuan(i.amount_in_dispute_total_fen),
        "amount_agreed_total": yuan(i.amount_agreed_total_fen),
        "open": i.open, "overdue_open": i.overdue_open,
    })
}

/// How a grouping keys a (room, category) cell.
type GroupKey<'a> = Box<dyn Fn(&(String, String)) -> String + 'a>;

fn merged(
    cells: &BTreeMap<(String, String), Cell>,
    key: impl Fn(&(String, String)) -> String,
) -> BTreeMap<String, Cell> {
    let mut out: BTreeMap<String, Cell> = BTreeMap::new();
    for (k, c) in cells {
        out.entry(key(k)).or_default().merge(c);
    }
    out
}

async fn projection_equals_naive_recomputation(backend: Backend) {
    let seed: u64 = std::env::var("TIAOJIE_STATS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(match backend {
            Backend::Sqlite => 0x5EED_0001,
            Backend::Postgres => 0x5EED_0002,
        });
    let mut rng = Rng(seed | 1);
    let mut app = TestApp::start(backend).await;
    let start = ts("2026-01-01T00:00:00Z");
    let cap = ts("2026-10-31T00:00:00Z");
    const CASES: usize = 36;
    const STEPS: usize = 220;
    let mut sims: Vec<Sim> = Vec::new();
    let mut steps = 0;
    let mut restarted = false;
    while steps < STEPS {
        if steps >= STEPS / 2 && !restarted {
            // Half way, a new server process on the same database: its projector resumes from
            // the checkpoint with no summaries in memory and reads them back from the table.
            restarted = true;
            let url = app.url.clone();
            drop(app);
            app = TestApp::on(backend, url).await;
        }
        if sims.len() < CASES && (sims.is_empty() || rng.chance(20)) {
            let room = *rng.pick(&ROOMS);
            let category = *rng.pick(&CATEGORIES);
            let source = *rng.pick(&SOURCES);
            let at = start + Duration::microseconds(rng.below(150 * 86_400 * 1_000_000) as i64);
            let amount = rng
                .chance(75)
                .then(|| format!("{}.{:02}", rng.below(100_000), rng.below(100)));
            let id = file_at(&app, room, category, source, amount.as_deref(), &rfc(at)).await;
            sims.push(Sim {
                id,
                status: "filed",
                room,
                at,
                mediators: Vec::new(),
                next_mediator: 0,
                resolved_at: None,
                jc: None,
                budget: rng.below(14) as u32,
            });
            steps += 1;
            continue;
        }
        let live: Vec<usize> = (0..sims.len())
            .filter(|i| sims[*i].status != "closed" && sims[*i].budget > 0)
            .collect();
        if live.is_empty() {
            if sims.len() >= CASES {
                break;
            }
            continue;
        }
        let i = *rng.pick(&live);
        sims[i].budget -= 1;
        if random_step(&app, &mut rng, &mut sims[i], cap).await {
            steps += 1;
        }
    }
    settled(&app).await;

    // The log, read back from the store in log order.
    let mut events: Vec<(uuid::Uuid, tiaojie_domain::CaseEvent)> = Vec::new();
    let mut after = None;
    let mut last = 0;
    loop {
        let page = app.state.store.read_log(after, 500).await.unwrap();
        let Some(tail) = page.last() else { break };
        after = Some(tail.position);
        last = tail.position;
        for e in page {
            events.push((
                uuid::Uuid::parse_str(&e.case_id).unwrap(),
                serde_json::from_value(e.payload).unwrap(),
            ));
        }
    }
    assert!(events.len() > STEPS / 2, "{} events", events.len());

    let mut windows: Vec<(Option<DateTime<Utc>>, DateTime<Utc>)> = vec![
        (None, ts("2026-11-01T00:00:00Z")),
        (
            None,
            start + Duration::seconds(rng.below(250 * 86_400) as i64),
        ),
    ];
    for _ in 0..4 {
        let from = start - Duration::days(10) + Duration::seconds(rng.below(280 * 86_400) as i64);
        let to = from + Duration::seconds(1 + rng.below(100 * 86_400) as i64);
        windows.push((Some(from), to));
    }
    // Windows whose bounds are events' own instants: `from` includes them, `to` excludes them.
    let instants: Vec<DateTime<Utc>> = events.iter().map(|(_, e)| e.occurred_at()).collect();
    for _ in 0..2 {
        let a = *rng.pick(&instants);
        let b = *rng.pick(&instants);
        if a != b {
            windows.push((Some(a.min(b)), a.max(b)));
        }
        windows.push((None, b));
    }
    // The histories reach every kind of step the statistics count.
    let everything = {
        let mut c = Cell::default();
        naive(
            &events,
            Window {
                from: None,
                to: ts("2026-11-01T00:00:00Z"),
            },
        )
        .values()
        .for_each(|x| c.merge(x));
        c.indicators()
    };
    for (what, n) in [
        ("accepted", everything.accepted),
        ("declined", everything.declined),
        ("transferred", everything.transferred_in),
        ("resolved", everything.resolved),
        ("terminated", everything.terminated),
        ("closed", everything.closed),
        ("followed_up", everything.followed_up),
        ("open", everything.open),
    ] {
        assert!(
            n > 0,
            "seed {seed}: no {what} in the generated histories: {everything:?}"
        );
    }
    let dash = token(Role::Dashboard, "dash-1", &[]);
    let rooms = app.state.rooms.clone();
    for (from, to) in windows {
        let ctx = format!("seed {seed}, window {from:?}..{to:?}");
        let q = match from {
            Some(f) => format!("from={}&to={}", rfc(f), rfc(to)),
            None => format!("to={}", rfc(to)),
        };
        let cells = naive(&events, Window { from, to });
        let mut totals = Cell::default();
        cells.values().for_each(|c| totals.merge(c));
        let expected_totals = expected_json(&totals.indicators());
        let groupings: [(&str, GroupKey); 3] = [
            ("room", Box::new(|k: &(String, String)| k.0.clone())),
            ("category", Box::new(|k: &(String, String)| k.1.clone())),
            (
                "cluster",
                Box::new(|k: &(String, String)| {
                    rooms
                        .get(&k.0)
                        .and_then(|r| r.cluster.clone())
                        .unwrap_or_else(|| "unclustered".into())
                }),
            ),
        ];
        for (group_by, key) in groupings {
            let s = get_ok(
                &app,
                &format!("/api/v1/statistics?{q}&group_by={group_by}"),
                &dash,
            )
            .await;
            assert_eq!(s["as_of_position"], last, "{ctx}");
            assert_indicators(
                &format!("{ctx} {group_by} totals"),
                &s["totals"],
                &expected_totals,
            );
            let expected = merged(&cells, key);
            let groups = s["groups"].as_array().unwrap();
            for g in groups {
                let k = g["key"].as_str().unwrap();
                let want = expected
                    .get(k)
                    .map(|c| expected_json(&c.indicators()))
                    .unwrap_or_else(zero);
                assert_indicators(&format!("{ctx} {group_by}={k}"), &g["indicators"], &want);
            }
            for k in expected.keys() {
                assert!(
                    groups.iter().any(|g| g["key"] == k.as_str()),
                    "{ctx}: no group {k}"
                );
            }
        }
        let room = *rng.pick(&ROOMS);
        let d = get_ok(&app, &format!("/api/v1/rooms/{room}/statistics?{q}"), &dash).await;
        let mine = merged(&cells, |k| k.0.clone());
        let want = mine
            .get(room)
            .map(|c| expected_json(&c.indicators()))
            .unwrap_or_else(zero);
        assert_indicators(&format!("{ctx} detail {room}"), &d["indicators"], &want);
        for c in CATEGORIES {
            let filed = cells
                .get(&(room.to_string(), c.to_string()))
                .map(|cell| cell.indicators().filed)
                .unwrap_or(0);
            assert_eq!(
                d["by_category"][c], filed,
                "{ctx} detail {room} by_category {c}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The case list.

async fn case_list_filters_order_pages_and_scope(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = |s: &str| format!("2026-{s}Z");
    // L1 R01 contract 01-10, accepted, mediators m-0001 and mAx → assigned
    let l1 = file_at(
        &app,
        "R01",
        "contract",
        "party_application",
        None,
        &t("01-10T02:00:00"),
    )
    .await;
    step_at(&app, &l1, "accept", json!({}), &t("01-11T02:00:00")).await;
    step_at(
        &app,
        &l1,
        "mediators",
        json!({"mediator_id": "m-0001"}),
        &t("01-12T02:00:00"),
    )
    .await;
    step_at(
        &app,
        &l1,
        "mediators",
        json!({"mediator_id": "mAx"}),
        &t("01-12T03:00:00"),
    )
    .await;
    // L2 R01 labor 02-05T02 → filed; L3 R02 contract at the very same instant → assigned with
    // m-0002, m-00010, m_x
    let l2 = file_at(
        &app,
        "R01",
        "labor",
        "own_initiative",
        None,
        &t("02-05T02:00:00"),
    )
    .await;
    let l3 = file_at(
        &app,
        "R02",
        "contract",
        "court_referral",
        None,
        &t("02-05T02:00:00"),
    )
    .await;
    step_at(&app, &l3, "accept", json!({}), &t("02-06T02:00:00")).await;
    for m in ["m-0002", "m-00010", "m_x"] {
        step_at(
            &app,
            &l3,
            "mediators",
            json!({"mediator_id": m}),
            &t("02-06T03:00:00"),
        )
        .await;
    }
    // L4 R01 contract 02-15 → declined
    let l4 = file_at(
        &app,
        "R01",
        "contract",
        "party_application",
        None,
        &t("02-15T02:00:00"),
    )
    .await;
    step_at(
        &app,
        &l4,
        "decline",
        json!({"reason": "不予受理"}),
        &t("02-16T02:00:00"),
    )
    .await;
    // L5 R02 tort 03-01T00:00 → filed
    let l5 = file_at(
        &app,
        "R02",
        "tort",
        "party_application",
        None,
        &t("03-01T00:00:00"),
    )
    .await;
    // L6 R01 contract 03-10, transferred to R02 → filed, in R02
    let l6 = file_at(
        &app,
        "R01",
        "contract",
        "party_application",
        None,
        &t("03-10T02:00:00"),
    )
    .await;
    step_at(
        &app,
        &l6,
        "transfer",
        json!({"to_room_id": "R02", "reason": "移送"}),
        &t("03-11T02:00:00"),
    )
    .await;
    settled(&app).await;

    // Newest filed first; L2 and L3 tie on filed_at and are ordered by case_id, descending.
    let (hi, lo) = if l2 > l3 { (&l2, &l3) } else { (&l3, &l2) };
    let all: Vec<String> = vec![
        l6.clone(),
        l5.clone(),
        l4.clone(),
        hi.clone(),
        lo.clone(),
        l1.clone(),
    ];
    let ids = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|i| i["case_id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |q: &str, tok: &str| {
        let path = format!("/api/v1/cases{q}");
        let app = &app;
        let tok = tok.to_string();
        async move { get_ok(app, &path, &tok).await }
    };
    let a = admin();
    let whole = list("", &a).await;
    assert_eq!(ids(&whole), all);
    assert_eq!(whole["next_cursor"], Value::Null);
    // A summary's fields.
    let item = &whole["items"][0];
    assert_eq!(item["case_id"], l6.as_str());
    assert_eq!(item["room_id"], "R02");
    assert_eq!(item["status"], "filed");
    assert_eq!(item["category"], "contract");
    assert_eq!(item["source"], "party_application");
    assert_eq!(item["filed_at"], "2026-03-10T02:00:00Z");
    assert_eq!(item["version"], 2);
    assert!(item["case_no"].as_str().unwrap().starts_with("R01-2026-"));
    let first = &whole["items"][5];
    assert_eq!(first["mediators"], json!(["m-0001", "mAx"]));
    assert_eq!(first["status"], "assigned");
    assert_eq!(first["version"], 4);

    // Filters.
    assert_eq!(
        ids(&list("?room_id=R01", &a).await),
        vec![l4.clone(), l2.clone(), l1.clone()]
    );
    assert_eq!(
        ids(&list("?room_id=R02", &a).await),
        vec![l6.clone(), l5.clone(), l3.clone()]
    );
    assert_eq!(
        ids(&list("?status=assigned", &a).await),
        vec![l3.clone(), l1.clone()]
    );
    assert_eq!(ids(&list("?status=declined", &a).await), vec![l4.clone()]);
    let filed: Vec<String> = all
        .iter()
        .filter(|i| [&l6, &l5, &l2].contains(i))
        .cloned()
        .collect();
    assert_eq!(ids(&list("?status=filed", &a).await), filed);
    assert_eq!(
        ids(&list("?category=contract", &a).await),
        vec![l6.clone(), l4.clone(), l3.clone(), l1.clone()]
    );
    assert_eq!(ids(&list("?category=tort", &a).await), vec![l5.clone()]);
    assert_eq!(
        ids(&list("?room_id=R01&category=contract", &a).await),
        vec![l4.clone(), l1.clone()]
    );
    // Mediator ids match exactly: not m-00010 for m-0001, not mAx for m_x, not m-0001 for M-0001.
    assert_eq!(
        ids(&list("?mediator_id=m-0001", &a).await),
        vec![l1.clone()]
    );
    assert_eq!(ids(&list("?mediator_id=m_x", &a).await), vec![l3.clone()]);
    assert_eq!(ids(&list("?mediator_id=mAx", &a).await), vec![l1.clone()]);
    assert_eq!(
        ids(&list("?mediator_id=M-0001", &a).await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&list("?mediator_id=m-000", &a).await),
        Vec::<String>::new()
    );
    // filed_from inclusive, filed_to exclusive
    let window: Vec<String> = all
        .iter()
        .filter(|i| [&l4, &l3, &l2].contains(i))
        .cloned()
        .collect();
    assert_eq!(
        ids(&list(
            "?filed_from=2026-02-05T02:00:00Z&filed_to=2026-03-01T00:00:00Z",
            &a
        )
        .await),
        window
    );
    assert_eq!(
        ids(&list("?filed_from=2026-03-01T00:00:00Z", &a).await),
        vec![l6.clone(), l5.clone()]
    );
    assert_eq!(
        ids(&list("?filed_to=2026-02-05T02:00:00Z", &a).await),
        vec![l1.clone()]
    );
    // Offsets are honoured (encoded `+`): 2026-02-05T10:00+08:00 is L2's and L3's instant.
    assert_eq!(
        ids(&list("?filed_to=2026-02-05T10:00:00%2B08:00", &a).await),
        vec![l1.clone()]
    );

    // Pages of 2: three pages, each case exactly once, in order.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            None => "?limit=2".to_string(),
            Some(c) => format!("?limit=2&cursor={c}"),
        };
        let page = list(&q, &a).await;
        pages += 1;
        let got = ids(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every case exactly once, newest first");
    // Paging a filtered list keeps the filter.
    let p1 = list("?room_id=R02&limit=2", &a).await;
    assert_eq!(ids(&p1), vec![l6.clone(), l5.clone()]);
    let c = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = list(&format!("?room_id=R02&limit=2&cursor={c}"), &a).await;
    assert_eq!(ids(&p2), vec![l3.clone()]);
    assert_eq!(p2["next_cursor"], Value::Null);

    // Scope by role.
    let m = mediator("m-0001", "R01");
    assert_eq!(
        ids(&list("", &m).await),
        vec![l4.clone(), l2.clone(), l1.clone()]
    );
    assert_eq!(ids(&list("?room_id=R02", &m).await), Vec::<String>::new());
    assert_eq!(
        ids(&list("", &room_admin("R02")).await),
        vec![l6.clone(), l5.clone(), l3.clone()]
    );
    assert_eq!(
        ids(&list("", &token(Role::Auditor, "aud-1", &[])).await),
        all
    );

    // Refusals.
    let r = app
        .get("/api/v1/cases", &token(Role::Dashboard, "dash-1", &[]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = app
        .send(
            axum::http::Method::GET,
            "/api/v1/cases",
            None,
            Value::Null,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for q in [
        "?limit=201",
        "?limit=0",
        "?limit=x",
        "?cursor=garbage",
        "?cursor=abc_def",
        "?status=pending",
        "?category=food",
        "?filed_from=yesterday",
        "?colour=red",
    ] {
        let r = app.get(&format!("/api/v1/cases{q}"), &a).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{q}: {}",
            r.body
        );
        assert_eq!(r.code(), "validation_failed", "{q}");
    }
    let r = app.get("/api/v1/cases?limit=200", &a).await;
    assert_eq!(r.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// 4. Who reads statistics.

async fn statistics_roles_and_bad_queries(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.file(&admin(), "R01").await;
    settled(&app).await;
    let dash = token(Role::Dashboard, "dash-1", &[]);
    let auditor = token(Role::Auditor, "aud-1", &[]);
    let m = mediator("m-0001", "R01");
    let ra = room_admin("R01");
    let status = |path: &'static str, tok: String| {
        let app = &app;
        async move {
            let r = app.get(path, &tok).await;
            (r.status, r.body)
        }
    };
    for tok in [dash.clone(), auditor.clone(), admin()] {
        for path in [
            "/api/v1/statistics",
            "/api/v1/statistics?group_by=cluster",
            "/api/v1/rooms/R01/statistics",
            "/api/v1/rooms/R02/statistics",
            "/api/v1/statistics.csv",
        ] {
            let (s, b) = status(path, tok.clone()).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
        }
    }
    let (s, b) = status("/api/v1/statistics", dash.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["totals"]["filed"], 1);
    for (tok, who) in [(m.clone(), "mediator"), (ra.clone(), "room_admin")] {
        for path in ["/api/v1/statistics", "/api/v1/statistics.csv"] {
            let (s, b) = status(path, tok.clone()).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{who} {path}: {b}");
        }
        let (s, b) = status("/api/v1/rooms/R01/statistics", tok.clone()).await;
        assert_eq!(s, StatusCode::OK, "{who} on its own room: {b}");
        assert_eq!(b["indicators"]["filed"], 1);
        let (s, b) = status("/api/v1/rooms/R02/statistics", tok.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who} on another room: {b}");
    }
    for tok in [admin(), dash.clone(), m.clone()] {
        let (s, b) = status("/api/v1/rooms/R99/statistics", tok).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    }
    let r = app
        .send(
            axum::http::Method::GET,
            "/api/v1/statistics",
            None,
            Value::Null,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for path in [
        "/api/v1/statistics?from=2026-04-01T00:00:00Z&to=2026-04-01T00:00:00Z",
        "/api/v1/statistics?from=2026-04-02T00:00:00Z&to=2026-04-01T00:00:00Z",
        "/api/v1/statistics?group_by=month",
        "/api/v1/statistics?from=2026-04-01",
        "/api/v1/statistics?to=soon",
        "/api/v1/statistics?colour=red",
        "/api/v1/rooms/R01/statistics?from=2026-04-01T00:00:00Z&to=2026-04-01T00:00:00Z",
        "/api/v1/rooms/R01/statistics?group_by=room",
        "/api/v1/statistics.csv?from=2026-05-01T00:00:00Z&to=2026-04-01T00:00:00Z",
    ] {
        let (s, b) = status(path, admin()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {b}");
        assert_eq!(b["code"], "validation_failed", "{path}");
    }
}

both_stores!(
    fixed_scenario_every_indicator,
    projection_equals_naive_recomputation,
    case_list_filters_order_pages_and_scope,
    statistics_roles_and_bad_queries,
);

//! The transition table of API.md, exhaustively through the router: a case is driven into each
//! of the eight statuses, and each of the twelve steps is asked for with a valid body. A pair
//! outside the table answers 409 `invalid_transition` naming the status and writes nothing; a
//! pair inside it succeeds (on a fresh case) and moves the case where the table says.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::{json, Value};

const STATUSES: [&str; 8] = [
    "filed",
    "accepted",
    "declined",
    "assigned",
    "in_mediation",
    "resolved",
    "terminated",
    "closed",
];

/// The twelve steps, by the last segment of their path (`recuse` is
/// `mediators/{id}/recuse`), each with a word its refusal's detail must contain.
const STEPS: [(&str, &str); 12] = [
    ("accept", "accept"),
    ("decline", "decline"),
    ("mediators", "assign"),
    ("recuse", "recuse"),
    ("sessions", "session"),
    ("resolve", "resolve"),
    ("terminate", "terminate"),
    ("transfer", "transfer"),
    ("judicial-confirmation", "judicial"),
    ("follow-ups", "follow-up"),
    ("close", "close"),
    ("notes", "note"),
];

/// The allowed (status, step, status after) triples, written out from API.md's "Case
/// lifecycle" (not read from the server's own table).
const ALLOWED: &[(&str, &str, &str)] = &[
    ("filed", "accept", "accepted"),
    ("filed", "decline", "declined"),
    ("accepted", "mediators", "assigned"),
    ("assigned", "mediators", "assigned"),
    ("in_mediation", "mediators", "in_mediation"),
    ("assigned", "recuse", "assigned"),
    ("in_mediation", "recuse", "in_mediation"),
    ("assigned", "sessions", "in_mediation"),
    ("in_mediation", "sessions", "in_mediation"),
    ("in_mediation", "resolve", "resolved"),
    ("filed", "terminate", "terminated"),
    ("accepted", "terminate", "terminated"),
    ("assigned", "terminate", "terminated"),
    ("in_mediation", "terminate", "terminated"),
    ("filed", "transfer", "filed"),
    ("accepted", "transfer", "accepted"),
    ("assigned", "transfer", "assigned"),
    ("resolved", "judicial-confirmation", "resolved"),
    ("resolved", "follow-ups", "resolved"),
    ("resolved", "close", "closed"),
    ("terminated", "close", "closed"),
    ("declined", "close", "closed"),
    ("filed", "notes", "filed"),
    ("accepted", "notes", "accepted"),
    ("declined", "notes", "declined"),
    ("assigned", "notes", "assigned"),
    ("in_mediation", "notes", "in_mediation"),
    ("resolved", "notes", "resolved"),
    ("terminated", "notes", "terminated"),
];

fn allowed(status: &str, step: &str) -> Option<&'static str> {
    ALLOWED
        .iter()
        .find(|(from, s, _)| *from == status && *s == step)
        .map(|(_, _, to)| *to)
}

/// A case driven to `status`.
struct Driven {
    id: String,
    /// The version (number of events) the case has in `status`.
    version: u64,
    /// A mediator assigned to it, if any.
    mediator: Option<&'static str>,
}

async fn ok(app: &TestApp, id: &str, step: &str, body: Value, status: &str) -> u64 {
    let reply = app
        .post(&format!("/api/v1/cases/{id}/{step}"), &admin(), body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{step}: {}", reply.body);
    assert_eq!(reply.body["status"], status, "{step}");
    reply.body["version"].as_u64().unwrap()
}

/// Files a case in R01 as an admin and drives it through the API into `status`.
async fn drive(app: &TestApp, status: &str) -> Driven {
    let id = app.file(&admin(), "R01").await;
    let mut version = 1;
    let mut mediator = None;
    let path: &[&str] = match status {
        "filed" => &[],
        "accepted" => &["accept"],
        "declined" => &["decline"],
        "assigned" => &["accept", "mediators"],
        "in_mediation" => &["accept", "mediators", "sessions"],
        "resolved" => &["accept", "mediators", "sessions", "resolve"],
        "terminated" => &["accept", "mediators", "terminate"],
        "closed" => &["accept", "mediators", "sessions", "resolve", "close"],
        other => panic!("no status {other}"),
    };
    for step in path {
        let (body, to) = match *step {
            "accept" => (json!({"note": "材料齐全"}), "accepted"),
            "decline" => (json!({"reason": "不属于受理范围"}), "declined"),
            "mediators" => {
                mediator = Some("m-0001");
                (
                    json!({"mediator_id": "m-0001", "name": "李调解"}),
                    "assigned",
                )
            }
            "sessions" => (json!({"summary": "第一次调解"}), "in_mediation"),
            "resolve" => (
                json!({"agreement": "written", "terms": "分期支付"}),
                "resolved",
            ),
            "terminate" => (json!({"reason": "no_agreement"}), "terminated"),
            "close" => (json!({"archive_no": "R01-卷-0001"}), "closed"),
            other => unreachable!("{other}"),
        };
        let v = ok(app, &id, step, body, to).await;
        version += 1;
        assert_eq!(v, version, "{step}");
    }
    let read = app.get(&format!("/api/v1/cases/{id}"), &admin()).await;
    assert_eq!(read.body["status"], status);
    assert_eq!(read.body["version"], version);
    assert_eq!(app.event_count(&id).await as u64, version);
    Driven {
        id,
        version,
        mediator,
    }
}

/// The path and a valid body for `step` on `case`.
fn request(case: &Driven, step: &str) -> (String, Value) {
    let c = |s: &str| format!("/api/v1/cases/{}/{s}", case.id);
    match step {
        "accept" => (c("accept"), json!({"note": "材料齐全"})),
        "decline" => (c("decline"), json!({"reason": "不属于受理范围"})),
        "mediators" => (
            c("mediators"),
            json!({"mediator_id": "m-0002", "name": "王调解"}),
        ),
        "recuse" => (
            c(&format!(
                "mediators/{}/recuse",
                case.mediator.unwrap_or("m-0001")
            )),
            json!({"reason": "与申请人有亲属关系"}),
        ),
        "sessions" => (
            c("sessions"),
            json!({"summary": "调解会议", "attendees": ["张三"]}),
        ),
        "resolve" => (
            c("resolve"),
            json!({"agreement": "written", "terms": "分期支付货款", "agreed_amount": "100.00"}),
        ),
        "terminate" => (c("terminate"), json!({"reason": "withdrawn"})),
        "transfer" => (
            c("transfer"),
            json!({"to_room_id": "R02", "reason": "属地管辖"}),
        ),
        "judicial-confirmation" => (c("judicial-confirmation"), json!({"status": "requested"})),
        "follow-ups" => (c("follow-ups"), json!({"performance": "full"})),
        "close" => (c("close"), json!({})),
        "notes" => (c("notes"), json!({"text": "电话联系双方"})),
        other => panic!("no step {other}"),
    }
}

/// Sanity of the literal table itself: it names only known statuses and steps, nothing twice,
/// and nothing leaves a closed case.
fn check_table() {
    let steps: Vec<&str> = STEPS.iter().map(|(s, _)| *s).collect();
    for (i, (from, step, to)) in ALLOWED.iter().enumerate() {
        assert!(STATUSES.contains(from) && STATUSES.contains(to), "{from}");
        assert!(steps.contains(step), "{step}");
        assert_ne!(*from, "closed");
        assert!(
            !ALLOWED[..i].iter().any(|(f, s, _)| f == from && s == step),
            "{from} {step} twice"
        );
    }
    assert_eq!(ALLOWED.len(), 29);
    assert_eq!(STATUSES.len() * STEPS.len() - ALLOWED.len(), 67);
}

async fn every_pair_outside_the_table_is_refused_and_writes_nothing(backend: Backend) {
    check_table();
    let app = TestApp::start(backend).await;
    let mut refused = 0;
    for status in STATUSES {
        let case = drive(&app, status).await;
        let total = app.total_events().await;
        for (step, word) in STEPS {
            if allowed(status, step).is_some() {
                continue;
            }
            let (path, body) = request(&case, step);
            let reply = app.post(&path, &admin(), body).await;
            assert_eq!(
                reply.status,
                StatusCode::CONFLICT,
                "{status} + {step}: {}",
                reply.body
            );
            assert_eq!(
                reply.headers["content-type"], "application/problem+json",
                "{status} + {step}"
            );
            assert_eq!(reply.code(), "invalid_transition", "{status} + {step}");
            assert_eq!(reply.body["status"], 409, "{status} + {step}");
            assert_eq!(
                reply.body["type"], "/problems/invalid_transition",
                "{status} + {step}"
            );
            let detail = reply.body["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains(status),
                "{status} + {step}: the detail names the status: {detail}"
            );
            assert!(
                detail.contains(word),
                "{status} + {step}: the detail names the step: {detail}"
            );
            assert!(reply.etag().is_none(), "{status} + {step}");
            assert_eq!(
                app.event_count(&case.id).await as u64,
                case.version,
                "{status} + {step} wrote an event"
            );
            let read = app
                .get(&format!("/api/v1/cases/{}", case.id), &admin())
                .await;
            assert_eq!(read.status, StatusCode::OK);
            assert_eq!(read.body["version"], case.version, "{status} + {step}");
            assert_eq!(read.body["status"], status, "{status} + {step}");
            assert_eq!(read.body["room_id"], "R01", "{status} + {step}");
            assert_eq!(
                read.etag().as_deref(),
                Some(format!("\"{}\"", case.version).as_str())
            );
            refused += 1;
        }
        assert_eq!(
            app.total_events().await,
            total,
            "{status}: refused steps wrote nothing in the whole log"
        );
    }
    assert_eq!(refused, 67);
}

async fn every_pair_inside_the_table_succeeds(backend: Backend) {
    let app = TestApp::start(backend).await;
    for (status, step, to) in ALLOWED {
        let case = drive(&app, status).await;
        let (path, body) = request(&case, step);
        let reply = app.post(&path, &admin(), body).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{status} + {step}: {}",
            reply.body
        );
        assert_eq!(reply.body["status"], *to, "{status} + {step}");
        assert_eq!(reply.body["version"], case.version + 1, "{status} + {step}");
        assert_eq!(
            reply.etag().as_deref(),
            Some(format!("\"{}\"", case.version + 1).as_str()),
            "{status} + {step}"
        );
        assert_eq!(
            app.event_count(&case.id).await as u64,
            case.version + 1,
            "{status} + {step}"
        );
        let room = if *step == "transfer" { "R02" } else { "R01" };
        assert_eq!(reply.body["room_id"], room, "{status} + {step}");
        match *step {
            "mediators" => assert!(reply.body["mediators"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mediator_id"] == "m-0002")),
            "recuse" => assert_eq!(reply.body["mediators"], json!([]), "{status}"),
            "judicial-confirmation" => {
                assert_eq!(reply.body["judicial_confirmation"]["status"], "requested")
            }
            "follow-ups" => assert_eq!(reply.body["follow_ups"], 1),
            "terminate" => assert_eq!(reply.body["outcome"]["reason"], "withdrawn"),
            _ => {}
        }
    }
}

/// A closed case refuses every step, also after it was reached by the shortest routes
/// (declined → closed, terminated → closed), and a closed case's events stay as they were.
async fn closed_by_any_route_refuses_everything(backend: Backend) {
    let app = TestApp::start(backend).await;
    let declined = drive(&app, "declined").await;
    let terminated = app.file(&admin(), "R01").await;
    ok(
        &app,
        &terminated,
        "terminate",
        json!({"reason": "party_refused"}),
        "terminated",
    )
    .await;
    ok(&app, &declined.id, "close", json!({}), "closed").await;
    ok(&app, &terminated, "close", json!({}), "closed").await;
    for (id, version) in [(declined.id.clone(), 3u64), (terminated.clone(), 3)] {
        let case = Driven {
            id: id.clone(),
            version,
            mediator: None,
        };
        for (step, _) in STEPS {
            let (path, body) = request(&case, step);
            let reply = app.post(&path, &admin(), body).await;
            assert_eq!(reply.status, StatusCode::CONFLICT, "{step}: {}", reply.body);
            assert_eq!(reply.code(), "invalid_transition", "{step}");
            assert!(
                reply.body["detail"].as_str().unwrap().contains("closed"),
                "{step}"
            );
        }
        assert_eq!(app.event_count(&id).await as u64, version);
    }
}

both_stores!(
    every_pair_outside_the_table_is_refused_and_writes_nothing,
    every_pair_inside_the_table_succeeds,
    closed_by_any_route_refuses_everything
);

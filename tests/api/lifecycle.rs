//! The whole lifecycle of API.md through the router: every step answers the case with its new
//! status, version and `ETag`, and a case read shows the last write at once.

use crate::both_stores;
use crate::support::*;
use axum::http::StatusCode;
use serde_json::json;

async fn step(
    app: &TestApp,
    token: &str,
    path: &str,
    body: serde_json::Value,
    status: &str,
    version: u64,
) -> serde_json::Value {
    let reply = app.post(path, token, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    assert_eq!(reply.body["status"], status, "{path}");
    assert_eq!(reply.body["version"], version, "{path}");
    assert_eq!(
        reply.etag().as_deref(),
        Some(format!("\"{version}\"").as_str()),
        "{path}"
    );
    let read = app
        .get(
            &format!("/api/v1/cases/{}", reply.body["case_id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(read.body, reply.body, "a read follows the write at once");
    reply.body
}

async fn full_lifecycle_resolved_and_closed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R01");
    let filed = app.post("/api/v1/cases", &ra, filing("R01")).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    let id = filed.body["case_id"].as_str().unwrap().to_string();
    assert_eq!(
        filed.headers["location"],
        format!("/api/v1/cases/{id}").as_str()
    );
    assert_eq!(filed.etag().as_deref(), Some("\"1\""));
    assert_eq!(filed.body["status"], "filed");
    assert_eq!(filed.body["amount_in_dispute"], "12500.00");
    let year = chrono::Utc::now()
        .with_timezone(&tiaojie_domain::shenzhen_offset())
        .format("%Y")
        .to_string();
    assert_eq!(filed.body["case_no"], format!("R01-{year}-0001"));
    let c = |s: &str| format!("/api/v1/cases/{id}/{s}");
    step(
        &app,
        &ra,
        &c("accept"),
        json!({"note": "材料齐全"}),
        "accepted",
        2,
    )
    .await;
    step(
        &app,
        &ra,
        &c("notes"),
        json!({"text": "电话联系双方"}),
        "accepted",
        3,
    )
    .await;
    step(
        &app,
        &ra,
        &c("mediators"),
        json!({"mediator_id": "m-0001", "name": "李调解"}),
        "assigned",
        4,
    )
    .await;
    let b = step(
        &app,
        &ra,
        &c("mediators"),
        json!({"mediator_id": "m-0002", "lead": true}),
        "assigned",
        5,
    )
    .await;
    assert_eq!(b["mediators"][1]["lead"], true);
    assert_eq!(b["mediators"][0]["lead"], false);
    let b = step(
        &app,
        &ra,
        &c("mediators/m-0002/recuse"),
        json!({"reason": "与申请人有亲属关系"}),
        "assigned",
        6,
    )
    .await;
    assert_eq!(b["mediators"].as_array().unwrap().len(), 1);
    step(
        &app,
        &admin(),
        &c("transfer"),
        json!({"to_room_id": "R02", "reason": "属地管辖"}),
        "assigned",
        7,
    )
    .await;
    // The case is now R02's: R01's admin no longer sees it, R02's does.
    assert_eq!(
        app.get(&format!("/api/v1/cases/{id}"), &ra).await.status,
        StatusCode::NOT_FOUND
    );
    let ra2 = room_admin("R02");
    let m1 = mediator("m-0001", "R02");
    let b = step(
        &app,
        &m1,
        &c("sessions"),
        json!({"summary": "第一次调解", "attendees": ["张三", "王五"]}),
        "in_mediation",
        8,
    )
    .await;
    assert_eq!(b["sessions"], 1);
    step(
        &app,
        &m1,
        &c("sessions"),
        json!({"summary": "第二次调解"}),
        "in_mediation",
        9,
    )
    .await;
    let b = step(
        &app,
        &m1,
        &c("resolve"),
        json!({"agreement": "written", "terms": "分期支付货款", "agreed_amount": "10000.5", "performance_due": "2027-03-31"}),
        "resolved",
        10,
    )
    .await;
    assert_eq!(b["outcome"]["agreed_amount"], "10000.50");
    assert!(b["concluded_at"].is_string());
    let b = step(
        &app,
        &m1,
        &c("judicial-confirmation"),
        json!({"status": "requested", "court": "深圳市福田区人民法院"}),
        "resolved",
        11,
    )
    .await;
    assert_eq!(b["judicial_confirmation"]["status"], "requested");
    step(
        &app,
        &m1,
        &c("judicial-confirmation"),
        json!({"status": "confirmed"}),
        "resolved",
        12,
    )
    .await;
    let b = step(
        &app,
        &m1,
        &c("follow-ups"),
        json!({"performance": "partial", "satisfaction": 4}),
        "resolved",
        13,
    )
    .await;
    assert_eq!(b["follow_ups"], 1);
    step(
        &app,
        &m1,
        &c("follow-ups"),
        json!({"performance": "full"}),
        "resolved",
        14,
    )
    .await;
    let b = step(
        &app,
        &ra2,
        &c("close"),
        json!({"archive_no": "R02-卷-0001"}),
        "closed",
        15,
    )
    .await;
    assert!(b["closed_at"].is_string());

    let history = app.get(&c("history"), &ra2).await;
    assert_eq!(history.status, StatusCode::OK);
    let events = history.body["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "CaseFiled",
            "CaseAccepted",
            "NoteAdded",
            "MediatorAssigned",
            "MediatorAssigned",
            "MediatorRecused",
            "CaseTransferred",
            "SessionRecorded",
            "SessionRecorded",
            "AgreementReached",
            "JudicialConfirmationRecorded",
            "JudicialConfirmationRecorded",
            "FollowUpRecorded",
            "FollowUpRecorded",
            "CaseClosed"
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1);
        assert!(
            e["recorded_at"].is_string()
                && e["occurred_at"].is_string()
                && e["request_id"].is_string()
        );
    }
    assert_eq!(
        events[0]["actor"],
        json!({"sub": "ra-1", "role": "room_admin"})
    );
    assert_eq!(
        events[7]["actor"],
        json!({"sub": "m-0001", "role": "mediator"})
    );
    // The audit log keeps the data whole (unmasked) as stored.
    assert_eq!(
        events[0]["data"]["CaseFiled"]["parties"][0]["phone"],
        "13812345678"
    );
}

async fn decline_terminate_and_back_dated_steps(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R03");
    let declined = app.file(&ra, "R03").await;
    step(
        &app,
        &ra,
        &format!("/api/v1/cases/{declined}/decline"),
        json!({"reason": "不属于受理范围"}),
        "declined",
        2,
    )
    .await;
    let b = step(
        &app,
        &ra,
        &format!("/api/v1/cases/{declined}/close"),
        json!({}),
        "closed",
        3,
    )
    .await;
    assert_eq!(b["outcome"]["kind"], "declined");

    let withdrawn = app.file(&ra, "R03").await;
    let b = step(
        &app,
        &ra,
        &format!("/api/v1/cases/{withdrawn}/terminate"),
        json!({"reason": "withdrawn"}),
        "terminated",
        2,
    )
    .await;
    assert_eq!(b["outcome"]["reason"], "withdrawn");

    let mut body = filing("R03");
    body["occurred_at"] = json!("2026-01-05T09:00:00+08:00");
    let referred = app.post("/api/v1/cases", &ra, body).await;
    assert_eq!(referred.status, StatusCode::CREATED);
    assert_eq!(referred.body["filed_at"], "2026-01-05T01:00:00Z");
    let id = referred.body["case_id"].as_str().unwrap();
    let c = |s: &str| format!("/api/v1/cases/{id}/{s}");
    step(
        &app,
        &ra,
        &c("accept"),
        json!({"occurred_at": "2026-01-06T10:00:00+08:00"}),
        "accepted",
        2,
    )
    .await;
    step(
        &app,
        &ra,
        &c("mediators"),
        json!({"mediator_id": "m-0009", "occurred_at": "2026-01-06T11:00:00+08:00"}),
        "assigned",
        3,
    )
    .await;
    let b = step(
        &app,
        &ra,
        &c("terminate"),
        json!({"reason": "referred", "referred_to": "court", "note": "引导诉讼", "occurred_at": "2026-02-01T10:00:00+08:00"}),
        "terminated",
        4,
    )
    .await;
    assert_eq!(b["outcome"]["referred_to"], "court");
    assert_eq!(b["concluded_at"], "2026-02-01T02:00:00Z");
}

async fn personal_fields_are_masked_for_auditors_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let ra = room_admin("R05");
    let id = app.file(&ra, "R05").await;
    let own = app.get(&format!("/api/v1/cases/{id}"), &ra).await;
    assert_eq!(own.body["parties"][0]["phone"], "13812345678");
    let auditor = token(tiaojie::auth::Role::Auditor, "aud-1", &[]);
    let seen = app.get(&format!("/api/v1/cases/{id}"), &auditor).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["parties"][0]["phone"], "138****5678");
    assert_eq!(seen.body["parties"][0]["id_number"], "4403**********1234");
    let admin_view = app.get(&format!("/api/v1/cases/{id}"), &admin()).await;
    assert_eq!(
        admin_view.body["parties"][0]["id_number"],
        "440301199001011234"
    );
}

both_stores!(
    full_lifecycle_resolved_and_closed,
    decline_terminate_and_back_dated_steps,
    personal_fields_are_masked_for_auditors_only
);

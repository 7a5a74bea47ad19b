//! Bad input through the router: every class of bad request gets its 4xx problem
//! (`application/problem+json`, the right `code`, the offending field in `errors[]`) and writes
//! nothing to the log.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

/// Asserts a problem answer: status, content type, code, the problem's own `status` and `type`.
fn assert_problem(reply: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(reply.code(), code, "{what}: {}", reply.body);
    assert_eq!(reply.body["status"], status.as_u16(), "{what}");
    assert_eq!(reply.body["type"], format!("/problems/{code}"), "{what}");
    assert!(
        reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: a detail"
    );
    assert!(reply.etag().is_none(), "{what}: no ETag on a refusal");
}

/// The fields named in a validation problem's `errors[]`.
fn fields(reply: &Reply) -> Vec<String> {
    reply.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors[] in {}", reply.body))
        .iter()
        .map(|e| {
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "a message for {e}"
            );
            e["field"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Asserts a 422 `validation_failed` whose errors name exactly `field`.
fn assert_invalid(reply: &Reply, field: &str, what: &str) {
    assert_problem(
        reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        what,
    );
    assert_eq!(fields(reply), [field], "{what}: {}", reply.body);
}

fn future() -> String {
    (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()
}

/// A filing body changed by `edit`.
fn filing_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = filing("R01");
    edit(&mut body);
    body
}

/// Each bad filing, the field its problem names.
fn bad_filings() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "no applicant",
            filing_with(|b| {
                b["parties"] = json!([
                    {"role": "respondent", "kind": "organization", "name": "深圳某材料有限公司"}
                ])
            }),
            "parties",
        ),
        (
            "no respondent",
            filing_with(|b| {
                b["parties"] = json!([{"role": "applicant", "kind": "person", "name": "张三"}])
            }),
            "parties",
        ),
        (
            "no parties",
            filing_with(|b| b["parties"] = json!([])),
            "parties",
        ),
        (
            "unknown party role",
            filing_with(|b| b["parties"][0]["role"] = json!("witness")),
            "parties[0].role",
        ),
        (
            "empty party name",
            filing_with(|b| b["parties"][1]["name"] = json!("  ")),
            "parties[1].name",
        ),
        (
            "unknown category",
            filing_with(|b| b["category"] = json!("divorce")),
            "category",
        ),
        (
            "unknown source",
            filing_with(|b| b["source"] = json!("rumour")),
            "source",
        ),
        (
            "money with three decimals",
            filing_with(|b| b["amount_in_dispute"] = json!("1.234")),
            "amount_in_dispute",
        ),
        (
            "negative money",
            filing_with(|b| b["amount_in_dispute"] = json!("-1")),
            "amount_in_dispute",
        ),
        (
            "negative money with decimals",
            filing_with(|b| b["amount_in_dispute"] = json!("-0.01")),
            "amount_in_dispute",
        ),
        (
            "money that is not a decimal",
            filing_with(|b| b["amount_in_dispute"] = json!("12,500")),
            "amount_in_dispute",
        ),
        (
            "money as a JSON number",
            filing_with(|b| b["amount_in_dispute"] = json!(12500)),
            "amount_in_dispute",
        ),
        (
            "empty summary",
            filing_with(|b| b["summary"] = json!("")),
            "summary",
        ),
        (
            "blank summary",
            filing_with(|b| b["summary"] = json!(" \n ")),
            "summary",
        ),
        (
            "occurred_at in the future",
            filing_with(|b| b["occurred_at"] = json!(future())),
            "occurred_at",
        ),
        (
            "occurred_at without an offset",
            filing_with(|b| b["occurred_at"] = json!("2026-01-05T09:00:00")),
            "occurred_at",
        ),
        (
            "unknown room",
            filing_with(|b| b["room_id"] = json!("R99")),
            "room_id",
        ),
    ]
}

async fn bad_filings_are_refused_and_write_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    // One good filing first, so that "nothing written" is measured against a non-empty log.
    app.file(&admin(), "R01").await;
    let total = app.total_events().await;
    assert_eq!(total, 1);
    for (what, body, field) in bad_filings() {
        let reply = app.post("/api/v1/cases", &admin(), body).await;
        assert_invalid(&reply, field, what);
        assert_eq!(app.total_events().await, total, "{what} wrote an event");
    }
    // The same as a room admin of R01 (the room check must not hide the field errors).
    let ra = room_admin("R01");
    let reply = app
        .post(
            "/api/v1/cases",
            &ra,
            filing_with(|b| b["amount_in_dispute"] = json!("1.234")),
        )
        .await;
    assert_invalid(&reply, "amount_in_dispute", "room admin, three decimals");
    // Several bad fields are reported together.
    let reply = app
        .post(
            "/api/v1/cases",
            &admin(),
            filing_with(|b| {
                b["category"] = json!("divorce");
                b["summary"] = json!("");
                b["amount_in_dispute"] = json!("-1");
            }),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "three bad fields",
    );
    let mut named = fields(&reply);
    named.sort();
    assert_eq!(named, ["amount_in_dispute", "category", "summary"]);
    assert_eq!(app.total_events().await, total);
}

async fn unknown_fields_and_broken_json_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let total = app.total_events().await;
    assert_eq!(total, 0);

    let reply = app
        .post(
            "/api/v1/cases",
            &admin(),
            filing_with(|b| b["priority"] = json!("high")),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "unknown top-level field",
    );
    let named = fields(&reply);
    assert_eq!(named.len(), 1, "{}", reply.body);
    assert!(
        named[0] == "priority",
        "the problem names the unknown field: {}",
        reply.body
    );

    let reply = app
        .post(
            "/api/v1/cases",
            &admin(),
            filing_with(|b| b["parties"][0]["email"] = json!("a@b.cn")),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "unknown party field",
    );
    let named = fields(&reply);
    assert_eq!(named.len(), 1, "{}", reply.body);
    assert!(
        named[0] == "parties[0].email",
        "the problem points into parties[0]: {}",
        reply.body
    );
    assert!(reply.body["detail"].as_str().unwrap().contains("email"));

    let reply = app
        .post(
            "/api/v1/cases",
            &admin(),
            filing_with(|b| {
                b.as_object_mut().unwrap().remove("summary");
            }),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        "missing summary",
    );
    assert!(
        reply.body["detail"].as_str().unwrap().contains("summary"),
        "{}",
        reply.body
    );

    // A filing's values in field order, as an array: serde would take it positionally.
    let f = filing("R01");
    let positional = json!([
        f["room_id"],
        f["category"],
        f["source"],
        f["summary"],
        f["claims"],
        f["amount_in_dispute"],
        f["industry"],
        f["parties"],
        null
    ]);
    let reply = app.post("/api/v1/cases", &admin(), positional).await;
    assert_invalid(&reply, "body", "a positional array filing");
    assert_eq!(app.total_events().await, total);

    // A party given as an array of its values, by position, is refused too, naming the party.
    let party_as_array = filing_with(|b| {
        b["parties"][0] = json!(["applicant", "person", "张三", null, null, null, null])
    });
    let reply = app.post("/api/v1/cases", &admin(), party_as_array).await;
    assert_invalid(&reply, "parties[0]", "a party as a positional array");
    assert_eq!(app.total_events().await, total);
    let broken: &[(&str, &[u8])] = &[
        ("truncated JSON", br#"{"room_id": "R01", "category": "#),
        ("not JSON", b"room_id=R01&category=contract"),
        ("a JSON array", b"[1, 2, 3]"),
        ("trailing garbage", b"{} {}"),
        ("no body", b""),
        ("invalid UTF-8", b"{\"summary\": \"\xff\xfe\"}"),
    ];
    for (what, bytes) in broken {
        let reply = app
            .send_raw(
                Method::POST,
                "/api/v1/cases",
                Some(&admin()),
                bytes.to_vec(),
                &[],
            )
            .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            what,
        );
        assert_eq!(fields(&reply), ["body"], "{what}: {}", reply.body);
    }
    let reply = app
        .send_raw(
            Method::POST,
            "/api/v1/cases",
            Some(&admin()),
            br#"{"room_id": "R01""#.to_vec(),
            &[],
        )
        .await;
    assert_invalid(&reply, "body", "broken JSON names the body");
    assert_eq!(app.total_events().await, total);
}

async fn a_body_over_64_kib_is_413(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.file(&admin(), "R01").await;
    let total = app.total_events().await;
    let big = "调".repeat(70 * 1024 / 3 + 10); // ~70 KB of UTF-8
    let body = filing_with(|b| b["summary"] = json!(big));
    assert!(serde_json::to_vec(&body).unwrap().len() > 70 * 1000);
    let reply = app.post("/api/v1/cases", &admin(), body).await;
    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "70 KB filing",
    );
    let reply = app
        .post(
            &format!("/api/v1/cases/{id}/notes"),
            &admin(),
            json!({"text": big}),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "70 KB note",
    );
    // Not JSON at all, just big: the size is judged first.
    let reply = app
        .send_raw(
            Method::POST,
            "/api/v1/cases",
            Some(&admin()),
            vec![b'x'; 70 * 1024],
            &[],
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "70 KB of garbage",
    );
    assert_eq!(app.total_events().await, total);
    assert_eq!(app.event_count(&id).await, 1);
    // Just under the limit is judged on its content instead (a too-long note is 422).
    let under = "x".repeat(60 * 1024);
    let reply = app
        .post(
            &format!("/api/v1/cases/{id}/notes"),
            &admin(),
            json!({"text": under}),
        )
        .await;
    assert_invalid(&reply, "text", "60 KB note");
    assert_eq!(app.total_events().await, total);
}

async fn bad_steps_on_a_case_are_refused_and_write_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut body = filing("R01");
    body["occurred_at"] = json!("2026-01-05T09:00:00+08:00");
    let filed = app.post("/api/v1/cases", &admin(), body).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    let id = filed.body["case_id"].as_str().unwrap().to_string();
    let c = |s: &str| format!("/api/v1/cases/{id}/{s}");
    let total = app.total_events().await;

    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "accept before the filing",
            c("accept"),
            json!({"occurred_at": "2026-01-05T08:59:59+08:00"}),
            "occurred_at",
        ),
        (
            "accept before the filing, in UTC",
            c("accept"),
            json!({"occurred_at": "2026-01-04T23:00:00Z"}),
            "occurred_at",
        ),
        (
            "note in the future",
            c("notes"),
            json!({"text": "电话联系双方", "occurred_at": future()}),
            "occurred_at",
        ),
        (
            "accept with a malformed occurred_at",
            c("accept"),
            json!({"occurred_at": "yesterday"}),
            "occurred_at",
        ),
        (
            "accept with an unknown field",
            c("accept"),
            json!({"note": "材料齐全", "priority": "high"}),
            "priority",
        ),
        (
            "note with an empty text",
            c("notes"),
            json!({"text": ""}),
            "text",
        ),
        (
            "decline with an empty reason",
            c("decline"),
            json!({"reason": "  "}),
            "reason",
        ),
        (
            "transfer to an unknown room",
            c("transfer"),
            json!({"to_room_id": "R99", "reason": "属地管辖"}),
            "to_room_id",
        ),
        (
            "transfer to its own room",
            c("transfer"),
            json!({"to_room_id": "R01", "reason": "属地管辖"}),
            "to_room_id",
        ),
        (
            "terminate with an unknown reason",
            c("terminate"),
            json!({"reason": "bored"}),
            "reason",
        ),
        (
            "note with a number for text",
            c("notes"),
            json!({"text": 42}),
            "text",
        ),
    ];
    for (what, path, body, field) in cases {
        let reply = app.post(&path, &admin(), body).await;
        if field == "priority" {
            assert_problem(
                &reply,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                what,
            );
            let named = fields(&reply);
            assert_eq!(named.len(), 1, "{what}: {}", reply.body);
            assert!(named[0] == "priority", "{what}: {}", reply.body);
        } else {
            assert_invalid(&reply, field, what);
        }
        assert_eq!(app.total_events().await, total, "{what} wrote an event");
    }
    let reply = app
        .send_raw(
            Method::POST,
            &c("accept"),
            Some(&admin()),
            b"{\"note\": ".to_vec(),
            &[],
        )
        .await;
    assert_invalid(&reply, "body", "broken JSON on a step");
    assert_eq!(app.total_events().await, total);
    assert_eq!(app.event_count(&id).await, 1);

    // The same accept, dated after the filing, is fine; a note dated before it is then refused.
    let reply = app
        .post(
            &c("accept"),
            &admin(),
            json!({"occurred_at": "2026-01-06T10:00:00+08:00"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = app
        .post(
            &c("notes"),
            &admin(),
            json!({"text": "补记", "occurred_at": "2026-01-06T09:59:59+08:00"}),
        )
        .await;
    assert_invalid(&reply, "occurred_at", "note before the acceptance");
    assert_eq!(app.event_count(&id).await, 2);
    assert_eq!(app.total_events().await, total + 1);
}

async fn a_stale_if_match_is_412_and_writes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.file(&admin(), "R01").await;
    let c = |s: &str| format!("/api/v1/cases/{id}/{s}");
    let reply = app.post(&c("accept"), &admin(), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    let total = app.total_events().await;
    for stale in ["\"1\"", "\"3\"", "W/\"1\""] {
        let reply = app
            .send(
                Method::POST,
                &c("notes"),
                Some(&admin()),
                json!({"text": "电话联系双方"}),
                &[("if-match", stale)],
            )
            .await;
        assert_problem(
            &reply,
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            stale,
        );
        assert!(
            reply.body["detail"].as_str().unwrap().contains('2'),
            "the detail names the current version: {}",
            reply.body
        );
        assert_eq!(app.total_events().await, total, "{stale}");
    }
    // A stale If-Match wins over a bad body: nothing is judged on an outdated view.
    let reply = app
        .send(
            Method::POST,
            &c("notes"),
            Some(&admin()),
            json!({"text": ""}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "stale and bad body",
    );
    let reply = app
        .send(
            Method::POST,
            &c("notes"),
            Some(&admin()),
            json!({"text": "电话联系双方"}),
            &[("if-match", "two")],
        )
        .await;
    assert_invalid(&reply, "If-Match", "If-Match that is not a version");
    assert_eq!(app.event_count(&id).await, 2);
    assert_eq!(app.total_events().await, total);
    // The current version is accepted.
    let reply = app
        .send(
            Method::POST,
            &c("notes"),
            Some(&admin()),
            json!({"text": "电话联系双方"}),
            &[("if-match", "\"2\"")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.etag().as_deref(), Some("\"3\""));
    assert_eq!(app.event_count(&id).await, 3);
}

async fn an_idempotency_key_reused_with_another_body_is_422(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.file(&admin(), "R01").await;
    let notes = format!("/api/v1/cases/{id}/notes");
    let key = [("idempotency-key", "note-key-1")];
    let first = app
        .send(
            Method::POST,
            &notes,
            Some(&admin()),
            json!({"text": "第一条"}),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["version"], 2);
    let total = app.total_events().await;
    assert_eq!(total, 2);

    let reply = app
        .send(
            Method::POST,
            &notes,
            Some(&admin()),
            json!({"text": "第二条"}),
            &key,
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "same key, other body",
    );
    assert_eq!(app.total_events().await, total);
    // The same key on another endpoint of the same case is another request too.
    let reply = app
        .send(
            Method::POST,
            &format!("/api/v1/cases/{id}/accept"),
            Some(&admin()),
            json!({"note": "第一条"}),
            &key,
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "same key, other step",
    );
    assert_eq!(app.total_events().await, total);
    // The same request again is the first answer, replayed, writing nothing.
    let again = app
        .send(
            Method::POST,
            &notes,
            Some(&admin()),
            json!({"text": "第一条"}),
            &key,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["version"], 2);
    assert_eq!(app.total_events().await, total);
    assert_eq!(app.event_count(&id).await, 2);

    // Filing: a key reused with another filing is refused and files nothing.
    let fkey = [("idempotency-key", "filing-key-1")];
    let filed = app
        .send(
            Method::POST,
            "/api/v1/cases",
            Some(&admin()),
            filing("R01"),
            &fkey,
        )
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    let total = app.total_events().await;
    let reply = app
        .send(
            Method::POST,
            "/api/v1/cases",
            Some(&admin()),
            filing("R02"),
            &fkey,
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "same key, other filing",
    );
    assert_eq!(app.total_events().await, total);
    // ... and it took no case number from R02: R02's first case is still number 0001.
    let year = chrono::Utc::now()
        .with_timezone(&tiaojie_domain::shenzhen_offset())
        .format("%Y")
        .to_string();
    let r02 = app.post("/api/v1/cases", &admin(), filing("R02")).await;
    assert_eq!(r02.status, StatusCode::CREATED, "{}", r02.body);
    assert_eq!(r02.body["case_no"], format!("R02-{year}-0001"));
    let total = app.total_events().await;
    // An unusable key is a field error.
    let reply = app
        .send(
            Method::POST,
            &notes,
            Some(&admin()),
            json!({"text": "第三条"}),
            &[("idempotency-key", "has space")],
        )
        .await;
    assert_invalid(&reply, "Idempotency-Key", "a key with a space");
    assert_eq!(app.total_events().await, total);
}

async fn a_bad_token_is_401_before_the_body_is_looked_at(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = app.file(&admin(), "R01").await;
    let total = app.total_events().await;
    let foreign = tiaojie::auth::JwtKey::new(secrecy::SecretString::from(
        "another-secret-0123456789abcdefghij".to_string(),
    ))
    .sign(&tiaojie::auth::Claims {
        sub: "admin-1".into(),
        role: tiaojie::auth::Role::Admin,
        rooms: vec![],
        exp: chrono::Utc::now().timestamp() + 3600,
        iat: None,
        name: None,
    });
    let expired = tiaojie::auth::JwtKey::new(secrecy::SecretString::from(SECRET.to_string())).sign(
        &tiaojie::auth::Claims {
            sub: "admin-1".into(),
            role: tiaojie::auth::Role::Admin,
            rooms: vec![],
            exp: chrono::Utc::now().timestamp() - 3600,
            iat: None,
            name: None,
        },
    );
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("malformed token", Some("not-a-jwt".to_string())),
        ("three garbage parts", Some("abc.def.ghi".to_string())),
        ("foreign signature", Some(foreign)),
        ("expired", Some(expired)),
        ("no token", None),
    ];
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "broken JSON filing",
            "/api/v1/cases",
            b"{\"room_id\": ".to_vec(),
        ),
        (
            "bad filing",
            "/api/v1/cases",
            serde_json::to_vec(&filing_with(|b| b["category"] = json!("divorce"))).unwrap(),
        ),
        (
            "70 KB filing",
            "/api/v1/cases",
            serde_json::to_vec(&filing_with(|b| {
                b["summary"] = json!("x".repeat(70 * 1024))
            }))
            .unwrap(),
        ),
        ("broken JSON step", "accept", b"{\"note\": ".to_vec()),
    ];
    for (what, token) in &tokens {
        for (kind, path, body) in &bodies {
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/api/v1/cases/{id}/{path}")
            };
            let reply = app
                .send_raw(Method::POST, &path, token.as_deref(), body.clone(), &[])
                .await;
            let label = format!("{what}, {kind}");
            assert_problem(&reply, StatusCode::UNAUTHORIZED, "unauthorized", &label);
            assert!(reply.body.get("errors").is_none(), "{label}");
            assert_eq!(
                reply
                    .headers
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{label}"
            );
        }
    }
    // A Basic scheme is no bearer token either.
    let reply = app
        .send_raw(
            Method::POST,
            "/api/v1/cases",
            None,
            b"{".to_vec(),
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
        )
        .await;
    assert_problem(&reply, StatusCode::UNAUTHORIZED, "unauthorized", "Basic");
    assert_eq!(app.total_events().await, total);
    assert_eq!(app.event_count(&id).await, 1);
}

both_stores!(
    bad_filings_are_refused_and_write_nothing,
    unknown_fields_and_broken_json_are_refused,
    a_body_over_64_kib_is_413,
    bad_steps_on_a_case_are_refused_and_write_nothing,
    a_stale_if_match_is_412_and_writes_nothing,
    an_idempotency_key_reused_with_another_body_is_422,
    a_bad_token_is_401_before_the_body_is_looked_at
);

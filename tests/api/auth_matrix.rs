//! The Auth section of API.md, cell by cell: every implemented endpoint × every kind of caller
//! answers 401, 403, 404 or goes through exactly where the contract says; a refused request
//! writes nothing, whatever its body; bad tokens of every kind are the same 401; personal data
//! is masked for every role but the case's own room staff and admins; and `tiaojie token`
//! signs with the server's secret.

use crate::both_stores;
use crate::support::*;
use axum::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{json, Value};
use tiaojie::auth::{Claims, JwtKey, Role};

/// The case's room, and another room.
const ROOM: &str = "R01";
const OTHER_ROOM: &str = "R02";
/// The mediators assigned on prepared cases (the second so that one can be recused).
const ASSIGNED: &str = "m-assigned";
const SECOND: &str = "m-second";

/// Who calls, relative to the case under test (which is always in [`ROOM`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoToken,
    AssignedMediator,
    UnassignedMediator,
    OtherRoomMediator,
    RoomAdmin,
    OtherRoomAdmin,
    Auditor,
    Dashboard,
    Admin,
}

const EVERYONE: [Who; 9] = [
    Who::NoToken,
    Who::AssignedMediator,
    Who::UnassignedMediator,
    Who::OtherRoomMediator,
    Who::RoomAdmin,
    Who::OtherRoomAdmin,
    Who::Auditor,
    Who::Dashboard,
    Who::Admin,
];

impl Who {
    fn token(self) -> Option<String> {
        Some(match self {
            Who::NoToken => return None,
            Who::AssignedMediator => mediator(ASSIGNED, ROOM),
            Who::UnassignedMediator => mediator("m-unassigned", ROOM),
            Who::OtherRoomMediator => mediator("m-other", OTHER_ROOM),
            Who::RoomAdmin => room_admin(ROOM),
            Who::OtherRoomAdmin => room_admin(OTHER_ROOM),
            Who::Auditor => token(Role::Auditor, "aud-1", &[]),
            Who::Dashboard => token(Role::Dashboard, "dash-1", &[]),
            Who::Admin => admin(),
        })
    }
}

/// What an endpoint is, for the purpose of who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads a case (case, history).
    ReadCase,
    /// accept, decline, notes: any mediator of the case's room.
    MediatorAnyCase,
    /// sessions, resolve, terminate, judicial confirmation, follow-ups: assigned mediators.
    MediatorAssigned,
    /// assign, recuse, transfer, close: room admins and admins only.
    RoomAdminStep,
    /// The rooms registry: every authenticated role.
    Rooms,
}

/// What API.md says `who` gets on an endpoint of `kind`; `None` means "allowed".
fn expected(who: Who, kind: Kind) -> Option<StatusCode> {
    use Who::*;
    let refused = match (who, kind) {
        (NoToken, _) => StatusCode::UNAUTHORIZED,
        (_, Kind::Rooms) => return None,
        (Dashboard, _) => StatusCode::FORBIDDEN,
        (OtherRoomMediator | OtherRoomAdmin, _) => StatusCode::NOT_FOUND,
        (Admin | RoomAdmin, _) => return None,
        (Auditor, Kind::ReadCase) => return None,
        (Auditor, _) => StatusCode::FORBIDDEN,
        (AssignedMediator, Kind::RoomAdminStep) => StatusCode::FORBIDDEN,
        (AssignedMediator, _) => return None,
        (UnassignedMediator, Kind::ReadCase | Kind::MediatorAnyCase) => return None,
        (UnassignedMediator, _) => StatusCode::FORBIDDEN,
    };
    Some(refused)
}

fn problem_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "invalid_transition",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        _ => "",
    }
}

/// How far a case is taken (by an admin) before the cell's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prep {
    Filed,
    /// Accepted, with [`ASSIGNED`] and [`SECOND`] assigned.
    Assigned,
    /// Assigned and one session recorded.
    InMediation,
    /// In mediation and resolved.
    Resolved,
}

async fn ok_step(app: &TestApp, id: &str, step: &str, body: Value) {
    let reply = app
        .post(&format!("/api/v1/cases/{id}/{step}"), &admin(), body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "prep {step}: {}", reply.body);
}

/// A fresh case in [`ROOM`] in the state `prep` names.
async fn prepare(app: &TestApp, prep: Prep) -> String {
    let id = app.file(&admin(), ROOM).await;
    if prep == Prep::Filed {
        return id;
    }
    ok_step(app, &id, "accept", json!({})).await;
    ok_step(app, &id, "mediators", json!({"mediator_id": ASSIGNED})).await;
    ok_step(app, &id, "mediators", json!({"mediator_id": SECOND})).await;
    if prep == Prep::Assigned {
        return id;
    }
    ok_step(app, &id, "sessions", json!({"summary": "第一次调解"})).await;
    if prep == Prep::InMediation {
        return id;
    }
    ok_step(
        app,
        &id,
        "resolve",
        json!({"agreement": "written", "terms": "分期支付货款"}),
    )
    .await;
    id
}

/// One endpoint (row of the matrix). `path` has `{id}` for the case id.
struct Row {
    method: Method,
    path: &'static str,
    prep: Option<Prep>,
    kind: Kind,
    /// A body that an allowed caller's request succeeds with (POST only).
    body: Value,
    /// What an allowed caller gets (200, or 409 where the case's state forbids the step).
    allowed: StatusCode,
}

fn rows() -> Vec<Row> {
    let get = |path, prep, kind| Row {
        method: Method::GET,
        path,
        prep,
        kind,
        body: Value::Null,
        allowed: StatusCode::OK,
    };
    let post = |path, prep, kind, body, allowed| Row {
        method: Method::POST,
        path,
        prep: Some(prep),
        kind,
        body,
        allowed,
    };
    use Kind::*;
    use Prep::*;
    let ok = StatusCode::OK;
    let conflict = StatusCode::CONFLICT;
    vec![
        get("/api/v1/cases/{id}", Some(Assigned), ReadCase),
        get("/api/v1/cases/{id}/history", Some(Assigned), ReadCase),
        post(
            "/api/v1/cases/{id}/accept",
            Filed,
            MediatorAnyCase,
            json!({"note": "材料齐全"}),
            ok,
        ),
        // The state forbids it, but authorization comes first: refused callers get 403/404.
        post(
            "/api/v1/cases/{id}/accept",
            Assigned,
            MediatorAnyCase,
            json!({}),
            conflict,
        ),
        post(
            "/api/v1/cases/{id}/decline",
            Filed,
            MediatorAnyCase,
            json!({"reason": "不属于受理范围"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/mediators",
            Assigned,
            RoomAdminStep,
            json!({"mediator_id": "m-third", "name": "王调解"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/mediators/m-second/recuse",
            Assigned,
            RoomAdminStep,
            json!({"reason": "与申请人有亲属关系"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/sessions",
            Assigned,
            MediatorAssigned,
            json!({"summary": "第一次调解", "attendees": ["张三"]}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/resolve",
            InMediation,
            MediatorAssigned,
            json!({"agreement": "written", "terms": "分期支付货款", "agreed_amount": "10000.00"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/terminate",
            InMediation,
            MediatorAssigned,
            json!({"reason": "no_agreement"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/transfer",
            Assigned,
            RoomAdminStep,
            json!({"to_room_id": "R03", "reason": "属地管辖"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/judicial-confirmation",
            Resolved,
            MediatorAssigned,
            json!({"status": "requested", "court": "深圳市福田区人民法院"}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/follow-ups",
            Resolved,
            MediatorAssigned,
            json!({"performance": "full", "satisfaction": 5}),
            ok,
        ),
        post(
            "/api/v1/cases/{id}/close",
            Resolved,
            RoomAdminStep,
            json!({"archive_no": "R01-卷-0001"}),
            ok,
        ),
        // Closing an assigned case is a 409 for those allowed, still 403/404 for the others.
        post(
            "/api/v1/cases/{id}/close",
            Assigned,
            RoomAdminStep,
            json!({}),
            conflict,
        ),
        post(
            "/api/v1/cases/{id}/notes",
            Assigned,
            MediatorAnyCase,
            json!({"text": "电话联系双方"}),
            ok,
        ),
        get("/api/v1/rooms", None, Rooms),
        get("/api/v1/rooms/R01", None, Rooms),
        get("/api/v1/rooms/R02", None, Rooms),
    ]
}

/// A body no step accepts (unknown field): an allowed caller gets 422 for it.
fn invalid_body() -> Value {
    json!({"bogus": true, "reason": 42})
}

/// Checks one status/problem code; records a failure in `failures`.
fn check(failures: &mut Vec<String>, cell: &str, reply: &Reply, want: StatusCode) {
    if reply.status != want {
        let body: String = reply.body.to_string().chars().take(300).collect();
        failures.push(format!(
            "{cell}: got {} (want {want}): {body}",
            reply.status
        ));
        return;
    }
    let code = problem_code(want);
    if !code.is_empty() && reply.code() != code {
        failures.push(format!(
            "{cell}: problem code {:?} (want {code:?})",
            reply.code()
        ));
    }
    if want == StatusCode::UNAUTHORIZED && !reply.headers.contains_key("www-authenticate") {
        failures.push(format!("{cell}: 401 without WWW-Authenticate"));
    }
}

async fn role_endpoint_matrix(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut failures = Vec::new();
    let mut allowed_successes = 0;
    for row in rows() {
        for who in EVERYONE {
            let id = match row.prep {
                Some(prep) => Some(prepare(&app, prep).await),
                None => None,
            };
            let path = row.path.replace("{id}", id.as_deref().unwrap_or(""));
            let cell = format!("{} {} [{:?}] as {who:?}", row.method, row.path, row.prep);
            let token = who.token();
            let refused = expected(who, row.kind);
            let before = app.total_events().await;
            let case_before = match &id {
                Some(id) => app.event_count(id).await,
                None => 0,
            };
            let send =
                |body: Value| app.send(row.method.clone(), &path, token.as_deref(), body, &[]);
            if row.method == Method::GET {
                let reply = send(Value::Null).await;
                check(&mut failures, &cell, &reply, refused.unwrap_or(row.allowed));
                if refused.is_none() && reply.status == StatusCode::OK {
                    if row.kind == Kind::ReadCase && reply.body["case_id"] != json!(id) {
                        failures.push(format!("{cell}: answered another case: {}", reply.body));
                    }
                    allowed_successes += 1;
                }
                if app.total_events().await != before {
                    failures.push(format!("{cell}: a read wrote events"));
                }
                continue;
            }
            let id = id.expect("steps have a case");
            match refused {
                Some(status) => {
                    // Authorization before validation: the same answer with a bad body.
                    let reply = send(invalid_body()).await;
                    check(
                        &mut failures,
                        &format!("{cell} (invalid body)"),
                        &reply,
                        status,
                    );
                    let reply = send(Value::Null).await;
                    check(&mut failures, &format!("{cell} (no body)"), &reply, status);
                    let reply = send(row.body.clone()).await;
                    check(&mut failures, &cell, &reply, status);
                    if app.total_events().await != before
                        || app.event_count(&id).await != case_before
                    {
                        failures.push(format!("{cell}: a refused request wrote events"));
                    }
                }
                None => {
                    // Allowed: an invalid body is the caller's fault (422) and writes nothing…
                    let reply = send(invalid_body()).await;
                    check(
                        &mut failures,
                        &format!("{cell} (invalid body)"),
                        &reply,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    );
                    if app.total_events().await != before {
                        failures.push(format!("{cell}: a 422 wrote events"));
                    }
                    // …and the valid one goes through (or is refused by the case's state).
                    let reply = send(row.body.clone()).await;
                    check(&mut failures, &cell, &reply, row.allowed);
                    let written = if reply.status == StatusCode::OK { 1 } else { 0 };
                    if reply.status == StatusCode::OK {
                        allowed_successes += 1;
                        if reply.body["case_id"] != json!(id)
                            || reply.body["version"] != json!(case_before + 1)
                        {
                            failures.push(format!("{cell}: unexpected case: {}", reply.body));
                        }
                    }
                    if app.total_events().await != before + written
                        || app.event_count(&id).await != case_before + written as usize
                    {
                        failures.push(format!("{cell}: wrote other than {written} event(s)"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cell(s) disagree with API.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The matrix is not vacuous: every allowed cell of a 200 row went through — 2 case reads × 5
    // readers, 3 room reads × 8 roles, and 35 steps (accept, decline, notes: 4 each; sessions,
    // resolve, terminate, judicial confirmation, follow-ups: 3 each; assign, recuse, transfer,
    // close: 2 each).
    assert_eq!(allowed_successes, 10 + 24 + 35);
}

async fn out_of_scope_is_indistinguishable_from_missing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = prepare(&app, Prep::Assigned).await;
    let missing = uuid::Uuid::new_v4().to_string();
    // Even the assigned mediator's own id, with a token for another room only, sees nothing.
    let outsiders = [
        mediator("m-other", OTHER_ROOM),
        mediator(ASSIGNED, OTHER_ROOM),
        room_admin(OTHER_ROOM),
        token(Role::RoomAdmin, "ra-9", &["R02", "R03", "R04"]),
    ];
    let before = app.total_events().await;
    for outsider in &outsiders {
        for (method, suffix, body) in [
            (Method::GET, "", Value::Null),
            (Method::GET, "/history", Value::Null),
            (Method::POST, "/accept", json!({})),
            (Method::POST, "/sessions", json!({"summary": "越权"})),
            (Method::POST, "/close", json!({})),
            (Method::POST, "/notes", json!({"text": "越权"})),
        ] {
            let seen = app
                .send(
                    method.clone(),
                    &format!("/api/v1/cases/{id}{suffix}"),
                    Some(outsider),
                    body.clone(),
                    &[],
                )
                .await;
            let absent = app
                .send(
                    method.clone(),
                    &format!("/api/v1/cases/{missing}{suffix}"),
                    Some(outsider),
                    body,
                    &[],
                )
                .await;
            assert_eq!(
                seen.status,
                StatusCode::NOT_FOUND,
                "{method} {suffix}: {}",
                seen.body
            );
            assert_eq!(seen.body, absent.body, "{method} {suffix}: existence leaks");
        }
    }
    assert_eq!(app.total_events().await, before);
    // The same requests from the room's staff do find the case (so the 404 above is scope).
    let inside = app
        .get(&format!("/api/v1/cases/{id}"), &mediator(ASSIGNED, ROOM))
        .await;
    assert_eq!(inside.status, StatusCode::OK);
    // A token for several rooms reaches each of them.
    let both = token(Role::Mediator, "m-two", &["R09", ROOM]);
    assert_eq!(
        app.get(&format!("/api/v1/cases/{id}"), &both).await.status,
        StatusCode::OK
    );
}

async fn filing_matrix(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut failures = Vec::new();
    let med = mediator("m-1", ROOM);
    let ra = room_admin(ROOM);
    let auditor = token(Role::Auditor, "aud-1", &[]);
    let dashboard = token(Role::Dashboard, "dash-1", &[]);
    let adm = admin();
    let with_extra = |room: &str| {
        let mut b = filing(room);
        b["bogus"] = json!(true);
        b
    };
    let mut bad_category = filing(OTHER_ROOM);
    bad_category["category"] = json!("no-such-category");
    let cases: Vec<(&str, Option<&str>, Value, StatusCode)> = vec![
        ("no token", None, filing(ROOM), StatusCode::UNAUTHORIZED),
        (
            "no token, bad body",
            None,
            invalid_body(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "mediator, own room",
            Some(&med),
            filing(ROOM),
            StatusCode::CREATED,
        ),
        (
            "mediator, other room",
            Some(&med),
            filing(OTHER_ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "mediator, other room, bad category",
            Some(&med),
            bad_category.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "mediator, other room, unknown field",
            Some(&med),
            with_extra(OTHER_ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "mediator, other room, only room_id",
            Some(&med),
            json!({"room_id": OTHER_ROOM}),
            StatusCode::FORBIDDEN,
        ),
        (
            "mediator, own room, unknown field",
            Some(&med),
            with_extra(ROOM),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "room_admin, own room",
            Some(&ra),
            filing(ROOM),
            StatusCode::CREATED,
        ),
        (
            "room_admin, other room",
            Some(&ra),
            filing(OTHER_ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "room_admin, other room, unknown field",
            Some(&ra),
            with_extra(OTHER_ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "auditor",
            Some(&auditor),
            filing(ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "auditor, bad body",
            Some(&auditor),
            invalid_body(),
            StatusCode::FORBIDDEN,
        ),
        (
            "auditor, no body",
            Some(&auditor),
            Value::Null,
            StatusCode::FORBIDDEN,
        ),
        (
            "dashboard",
            Some(&dashboard),
            filing(ROOM),
            StatusCode::FORBIDDEN,
        ),
        (
            "dashboard, bad body",
            Some(&dashboard),
            invalid_body(),
            StatusCode::FORBIDDEN,
        ),
        ("admin, R01", Some(&adm), filing(ROOM), StatusCode::CREATED),
        (
            "admin, R02",
            Some(&adm),
            filing(OTHER_ROOM),
            StatusCode::CREATED,
        ),
        (
            "admin, unknown field",
            Some(&adm),
            with_extra(ROOM),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (cell, token, body, want) in cases {
        let before = app.total_events().await;
        let room = body["room_id"].as_str().unwrap_or("").to_string();
        let reply = app
            .send(Method::POST, "/api/v1/cases", token, body, &[])
            .await;
        check(&mut failures, cell, &reply, want);
        let written = app.total_events().await - before;
        if want == StatusCode::CREATED && reply.status == StatusCode::CREATED {
            let id = reply.body["case_id"].as_str().unwrap_or("");
            if reply.body["room_id"] != room.as_str()
                || reply.body["status"] != "filed"
                || reply.headers.get("location").and_then(|v| v.to_str().ok())
                    != Some(format!("/api/v1/cases/{id}").as_str())
            {
                failures.push(format!("{cell}: unexpected answer {}", reply.body));
            }
            if written != 1 {
                failures.push(format!("{cell}: wrote {written} events, want 1"));
            }
        } else if written != 0 {
            failures.push(format!("{cell}: refused yet wrote {written} events"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} filing cell(s) disagree with API.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Tokens

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn admin_claims(exp: i64) -> Claims {
    Claims {
        sub: "admin-1".into(),
        role: Role::Admin,
        rooms: vec![],
        exp,
        iat: None,
        name: None,
    }
}

fn hs256(secret: &str, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Every kind of token API.md says is 401, as the whole `Authorization` header value.
fn bad_authorizations() -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    let payload = serde_json::to_string(&admin_claims(now + 3600)).unwrap();
    let valid = JwtKey::new(SecretString::from(SECRET.to_string())).sign(&admin_claims(now + 3600));
    let other_key = JwtKey::new(SecretString::from(
        "another-secret-of-enough-length-42".to_string(),
    ));
    let expired = JwtKey::new(SecretString::from(SECRET.to_string())).sign(&admin_claims(now - 60));
    let alg_none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(payload.as_bytes()));
    let alg_none_typ = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(payload.as_bytes())
    );
    // HS512, correctly signed with the right secret: still not HS256.
    let hs512 = {
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS512","typ":"JWT"}"#),
            b64(payload.as_bytes())
        );
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    // An HS256 header on an HS512 signature.
    let hs256_header_hs512_sig = {
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(payload.as_bytes())
        );
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    // A mediator's valid token with its payload swapped for an admin's.
    let tampered = {
        let med = mediator("m-1", ROOM);
        let parts: Vec<&str> = med.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(payload.as_bytes()), parts[2])
    };
    let empty_signature = {
        let parts: Vec<&str> = valid.split('.').collect();
        format!("{}.{}.", parts[0], parts[1])
    };
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let unknown_role = hs256(
        SECRET,
        header,
        &format!(
            r#"{{"sub":"x","role":"superuser","rooms":[],"exp":{}}}"#,
            now + 3600
        ),
    );
    let no_exp = hs256(SECRET, header, r#"{"sub":"x","role":"admin","rooms":[]}"#);
    vec![
        (
            "wrong signature",
            format!("Bearer {}", other_key.sign(&admin_claims(now + 3600))),
        ),
        ("expired", format!("Bearer {expired}")),
        ("alg none", format!("Bearer {alg_none}")),
        ("alg none with typ", format!("Bearer {alg_none_typ}")),
        ("alg HS512", format!("Bearer {hs512}")),
        (
            "HS256 header, HS512 signature",
            format!("Bearer {hs256_header_hs512_sig}"),
        ),
        ("tampered payload", format!("Bearer {tampered}")),
        ("empty signature", format!("Bearer {empty_signature}")),
        ("unknown role", format!("Bearer {unknown_role}")),
        ("no exp", format!("Bearer {no_exp}")),
        ("garbage", "Bearer not-a-jwt-at-all".to_string()),
        ("garbage three parts", "Bearer aaa.bbb.ccc".to_string()),
        ("four parts", format!("Bearer {valid}.{}", b64(b"x"))),
        ("empty bearer", "Bearer ".to_string()),
        ("missing Bearer prefix", valid.clone()),
        ("Basic scheme", format!("Basic {valid}")),
    ]
}

async fn bad_tokens_are_401(backend: Backend) {
    let app = TestApp::start(backend).await;
    let id = prepare(&app, Prep::Assigned).await;
    let now = chrono::Utc::now().timestamp();
    let valid = JwtKey::new(SecretString::from(SECRET.to_string())).sign(&admin_claims(now + 3600));
    let requests = [
        (Method::GET, "/api/v1/rooms".to_string(), Value::Null),
        (Method::GET, "/api/v1/rooms/R01".to_string(), Value::Null),
        (Method::GET, format!("/api/v1/cases/{id}"), Value::Null),
        (
            Method::GET,
            format!("/api/v1/cases/{id}/history"),
            Value::Null,
        ),
        (Method::POST, "/api/v1/cases".to_string(), filing(ROOM)),
        (
            Method::POST,
            format!("/api/v1/cases/{id}/notes"),
            json!({"text": "匿名"}),
        ),
        (Method::POST, format!("/api/v1/cases/{id}/close"), json!({})),
    ];
    // The control: the same requests with the valid token go through, so 401 below is the token.
    for (method, path, _) in &requests[..4] {
        let reply = app
            .send(
                method.clone(),
                path,
                None,
                Value::Null,
                &[("authorization", &format!("Bearer {valid}"))],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "control {path}: {}",
            reply.body
        );
    }
    let before = app.total_events().await;
    let mut failures = Vec::new();
    for (name, authorization) in bad_authorizations() {
        for (method, path, body) in &requests {
            let reply = app
                .send(
                    method.clone(),
                    path,
                    None,
                    body.clone(),
                    &[("authorization", authorization.as_str())],
                )
                .await;
            let cell = format!("{name}: {method} {path}");
            check(&mut failures, &cell, &reply, StatusCode::UNAUTHORIZED);
            let content_type = reply
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if reply.status == StatusCode::UNAUTHORIZED
                && content_type != "application/problem+json"
            {
                failures.push(format!("{cell}: content-type {content_type:?}"));
            }
        }
    }
    // No Authorization header at all.
    for (method, path, body) in &requests {
        let reply = app
            .send(method.clone(), path, None, body.clone(), &[])
            .await;
        check(
            &mut failures,
            &format!("no header: {method} {path}"),
            &reply,
            StatusCode::UNAUTHORIZED,
        );
    }
    assert!(
        failures.is_empty(),
        "{} token cell(s) not 401:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(app.total_events().await, before, "a 401 wrote events");
}

// ---------------------------------------------------------------------------------------------
// Masking

const PHONE: &str = "13812345678";
const ID_NUMBER: &str = "440301199001011234";

fn assert_unmasked(who: &str, body: &Value) {
    assert_eq!(body["parties"][0]["phone"], PHONE, "{who}: {body}");
    assert_eq!(body["parties"][0]["id_number"], ID_NUMBER, "{who}: {body}");
}

fn assert_masked(who: &str, body: &Value) {
    assert_eq!(body["parties"][0]["phone"], "138****5678", "{who}: {body}");
    assert_eq!(
        body["parties"][0]["id_number"], "4403**********1234",
        "{who}: {body}"
    );
    let text = body.to_string();
    assert!(
        !text.contains(PHONE) && !text.contains(ID_NUMBER),
        "{who}: personal data leaks: {text}"
    );
}

async fn personal_data_masking_by_role(backend: Backend) {
    let app = TestApp::start(backend).await;
    let filer = mediator("m-1", ROOM);
    let filed = app.post("/api/v1/cases", &filer, filing(ROOM)).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    assert_unmasked("filing mediator", &filed.body);
    let id = filed.body["case_id"].as_str().unwrap().to_string();
    let case = format!("/api/v1/cases/{id}");

    let own_staff = [
        ("filing mediator", filer.clone()),
        ("another mediator of the room", mediator("m-2", ROOM)),
        ("room admin", room_admin(ROOM)),
        (
            "multi-room mediator",
            token(Role::Mediator, "m-3", &["R09", ROOM]),
        ),
        ("admin", admin()),
    ];
    for (who, t) in &own_staff {
        let reply = app.get(&case, t).await;
        assert_eq!(reply.status, StatusCode::OK, "{who}: {}", reply.body);
        assert_unmasked(who, &reply.body);
    }
    let auditor = token(Role::Auditor, "aud-1", &[]);
    let reply = app.get(&case, &auditor).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_masked("auditor", &reply.body);

    // A step's answer is masked the same way for whoever takes it.
    let accepted = app
        .post(&format!("{case}/accept"), &mediator("m-2", ROOM), json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_unmasked("accepting mediator", &accepted.body);

    // After a transfer the new room's staff are the own staff; the old room's see nothing.
    let moved = app
        .post(
            &format!("{case}/transfer"),
            &admin(),
            json!({"to_room_id": OTHER_ROOM, "reason": "属地管辖"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_unmasked("admin (transfer)", &moved.body);
    let reply = app.get(&case, &room_admin(OTHER_ROOM)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_unmasked("new room's admin", &reply.body);
    assert_eq!(
        app.get(&case, &room_admin(ROOM)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_masked(
        "auditor after transfer",
        &app.get(&case, &auditor).await.body,
    );

    // The history is the log exactly as stored: whoever may read it reads it whole.
    let history = app.get(&format!("{case}/history"), &auditor).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    assert_eq!(
        history.body["events"][0]["data"]["CaseFiled"]["parties"][0]["phone"],
        PHONE
    );
}

both_stores!(
    role_endpoint_matrix,
    out_of_scope_is_indistinguishable_from_missing,
    filing_matrix,
    bad_tokens_are_401,
    personal_data_masking_by_role
);

// ---------------------------------------------------------------------------------------------
// `tiaojie token` (the command line does not touch the store: these run once)

fn fresh_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tiaojie-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `tiaojie token …` in `dir` with `TIAOJIE_DATA_DIR=dir` and, if given, the secret.
fn run_token(dir: &std::path::Path, secret: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tiaojie"));
    command
        .arg("token")
        .args(args)
        .current_dir(dir)
        .env("TIAOJIE_DATA_DIR", dir)
        .env_remove("TIAOJIE_JWT_SECRET")
        .env_remove("TIAOJIE_ROOMS")
        .env_remove("TIAOJIE_DATABASE_URL");
    if let Some(secret) = secret {
        command.env("TIAOJIE_JWT_SECRET", secret);
    }
    command.output().expect("run tiaojie")
}

fn printed_token(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "tiaojie token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    let token = text.trim().to_string();
    assert_eq!(token.lines().count(), 1, "one line: {text:?}");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_token_is_accepted_by_the_app_with_its_claims() {
    let dir = fresh_dir();
    let output = run_token(
        &dir,
        Some(SECRET),
        &[
            "--role", "mediator", "--sub", "m-1", "--room", "R01", "--ttl", "1h",
        ],
    );
    let token = printed_token(&output);
    let now = chrono::Utc::now().timestamp();
    let claims = JwtKey::new(SecretString::from(SECRET.to_string()))
        .verify(&token, now)
        .expect("signed with the configured secret");
    assert_eq!(claims.sub, "m-1");
    assert_eq!(claims.role, Role::Mediator);
    assert_eq!(claims.rooms, vec!["R01".to_string()]);
    assert!(
        (now + 3600 - 60..=now + 3600 + 1).contains(&claims.exp),
        "exp {} is not an hour from {now}",
        claims.exp
    );
    if let Some(iat) = claims.iat {
        assert!((now - 60..=now + 1).contains(&iat), "iat {iat}");
    }
    // The raw header is exactly HS256.
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    // With a secret configured, nothing is generated in the data folder.
    assert!(!dir.join("jwt-secret").exists());

    let app = TestApp::start(Backend::Sqlite).await;
    let rooms = app.get("/api/v1/rooms", &token).await;
    assert_eq!(rooms.status, StatusCode::OK, "{}", rooms.body);
    assert_eq!(rooms.body["items"].as_array().map(Vec::len), Some(30));
    // And it acts as a mediator of R01: it files there, not in R02.
    let filed = app.post("/api/v1/cases", &token, filing("R01")).await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", filed.body);
    assert_eq!(
        app.post("/api/v1/cases", &token, filing("R02"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // A token signed with another secret is not.
    let other = run_token(
        &dir,
        Some("a-completely-different-secret-123"),
        &["--role", "admin", "--sub", "a-1"],
    );
    let other = printed_token(&other);
    assert_eq!(
        app.get("/api/v1/rooms", &other).await.status,
        StatusCode::UNAUTHORIZED
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_token_without_secret_signs_with_the_generated_one() {
    let dir = fresh_dir();
    let args = [
        "--role",
        "room_admin",
        "--sub",
        "ra-1",
        "--room",
        "R01",
        "--room",
        "R02",
    ];
    let first = printed_token(&run_token(&dir, None, &args));
    let secret_file = dir.join("jwt-secret");
    let secret = std::fs::read_to_string(&secret_file).expect("the generated secret is kept");
    let secret = secret.trim().to_string();
    assert!(
        secret.len() >= 32,
        "a strong secret: {} chars",
        secret.len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }
    let second = printed_token(&run_token(&dir, None, &args));
    assert_eq!(
        std::fs::read_to_string(&secret_file).unwrap().trim(),
        secret,
        "the second run reuses the secret"
    );
    let key = JwtKey::new(SecretString::from(secret));
    let now = chrono::Utc::now().timestamp();
    for token in [&first, &second] {
        let claims = key
            .verify(token, now)
            .expect("signed with the generated secret");
        assert_eq!(claims.role, Role::RoomAdmin);
        assert_eq!(claims.sub, "ra-1");
        assert_eq!(claims.rooms, vec!["R01".to_string(), "R02".to_string()]);
        // Default lifetime 8h.
        assert!((now + 8 * 3600 - 60..=now + 8 * 3600 + 1).contains(&claims.exp));
    }
    // It is not the tests' secret (the generated one is random, not a fixed default).
    assert!(JwtKey::new(SecretString::from(SECRET.to_string()))
        .verify(&first, now)
        .is_err());
    // Another data folder generates another secret.
    let elsewhere = fresh_dir();
    let third = printed_token(&run_token(&elsewhere, None, &args));
    assert!(key.verify(&third, now).is_err(), "two folders, two secrets");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn cli_token_refuses_bad_requests() {
    let dir = fresh_dir();
    for (why, args) in [
        (
            "mediator without --room",
            vec!["--role", "mediator", "--sub", "m-1"],
        ),
        (
            "room_admin without --room",
            vec!["--role", "room_admin", "--sub", "ra-1"],
        ),
        ("unknown role", vec!["--role", "superuser", "--sub", "x"]),
        (
            "unknown room",
            vec!["--role", "mediator", "--sub", "m-1", "--room", "R99"],
        ),
        (
            "bad ttl",
            vec!["--role", "admin", "--sub", "a-1", "--ttl", "8x"],
        ),
        ("empty sub", vec!["--role", "admin", "--sub", " "]),
    ] {
        let output = run_token(&dir, Some(SECRET), &args);
        assert!(!output.status.success(), "{why}: exit {:?}", output.status);
        assert!(
            String::from_utf8_lossy(&output.stdout).trim().is_empty(),
            "{why}: printed a token anyway"
        );
        assert!(!output.stderr.is_empty(), "{why}: says nothing on stderr");
    }
    // The control: the same with a room succeeds.
    printed_token(&run_token(
        &dir,
        Some(SECRET),
        &["--role", "mediator", "--sub", "m-1", "--room", "R01"],
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

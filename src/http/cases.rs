//! The case resource: filing, the twelve steps on a case, reading a case and its history.
//!
//! Every command goes the same way: who may call (401/403) → the case as its own events show it
//! (404 outside the caller's rooms) → may the caller take this step on it (403) → `If-Match`
//! (412) → the body (422) → the domain (409/422) → one appended event → the case, its version as
//! `ETag`. That path is [`run_step`]; an endpoint only names its step and how to read its body.

use super::error::{ApiError, FieldError};
use super::{if_match, parse_json, wire, AppState, Body, Caller, Object, RequestId};
use crate::auth::{self, Principal};
use crate::rooms::Rooms;
use crate::store::{CommandMeta, ExecuteError, Executed, Idempotency};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tiaojie_domain::*;
use uuid::Uuid;

/// The case routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/cases", post(file_case))
        .route("/cases/{case_id}", get(get_case))
        .route("/cases/{case_id}/history", get(history))
        .route("/cases/{case_id}/accept", post(accept))
        .route("/cases/{case_id}/decline", post(decline))
        .route("/cases/{case_id}/mediators", post(assign_mediator))
        .route(
            "/cases/{case_id}/mediators/{mediator_id}/recuse",
            post(recuse_mediator),
        )
        .route("/cases/{case_id}/sessions", post(record_session))
        .route("/cases/{case_id}/resolve", post(resolve))
        .route("/cases/{case_id}/terminate", post(terminate))
        .route("/cases/{case_id}/transfer", post(transfer))
        .route(
            "/cases/{case_id}/judicial-confirmation",
            post(judicial_confirmation),
        )
        .route("/cases/{case_id}/follow-ups", post(follow_up))
        .route("/cases/{case_id}/close", post(close))
        .route("/cases/{case_id}/notes", post(add_note))
}

/// Everything about the request a command needs besides its body.
struct Request {
    state: AppState,
    caller: Principal,
    request_id: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    path: String,
}

fn when(occurred_at: Option<&str>, now: DateTime<Utc>) -> Result<When, ApiError> {
    match occurred_at {
        None => Ok(When::now(now)),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| When {
                occurred_at: t.with_timezone(&Utc),
                now,
            })
            .map_err(|_| ApiError::field("occurred_at", "must be an RFC 3339 time with offset")),
    }
}

fn case_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::NotFound("no such case".into()))
}

fn idempotency(req: &Request, method: &str) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = req.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field("Idempotency-Key", "must be 1–200 visible ASCII characters")
        })?;
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(req.path.as_bytes());
    hasher.update(b"\n");
    hasher.update(&req.body);
    let request_hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(Idempotency {
        // Scoped to the caller: two callers' keys never meet.
        key: format!("{}:{}:{}", req.caller.sub.len(), req.caller.sub, key),
        request_hash,
    }))
}

fn meta(req: &Request, method: &str) -> Result<CommandMeta, ApiError> {
    Ok(CommandMeta {
        idempotency: idempotency(req, method)?,
        ..meta_without_key(req)
    })
}

fn meta_without_key(req: &Request) -> CommandMeta {
    CommandMeta {
        sub: req.caller.sub.clone(),
        role: req.caller.role.as_str().to_string(),
        request_id: req.request_id.clone(),
        idempotency: None,
    }
}

fn execute_error(e: ExecuteError<ApiError>) -> ApiError {
    match e {
        ExecuteError::Rejected(e) => e,
        ExecuteError::Domain(e) => e.into(),
        ExecuteError::Conflict => ApiError::VersionConflict,
        ExecuteError::KeyReused => ApiError::IdempotencyKeyReused,
        ExecuteError::Store(e) => e.into(),
    }
}

/// The case answer: the case object, `ETag: "<version>"`.
pub(crate) fn case_response(
    status: StatusCode,
    caller: &Principal,
    case: &Case,
    replayed: bool,
) -> Response {
    let Some(file) = &case.file else {
        return ApiError::NotFound("no such case".into()).into_response();
    };
    let unmasked = auth::sees_personal_data(caller, file.room_id.as_str());
    let mut response = (status, Json(wire::case(file, case.version, unmasked))).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", case.version)) {
        headers.insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED {
        if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/cases/{}", file.case_id)) {
            headers.insert(header::LOCATION, location);
        }
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The path every step on an existing case takes (see the module doc). `parse` turns the body
/// into the command; it runs only once the caller may take the step.
async fn run_step<P>(req: Request, id: &str, step: Step, parse: P) -> Result<Response, ApiError>
where
    P: Fn(&[u8], DateTime<Utc>, &Rooms) -> Result<CaseCommand, ApiError> + Send + Sync + 'static,
{
    if !auth::may_write(&req.caller) {
        return Err(ApiError::Forbidden(format!(
            "the {} role does not record steps",
            req.caller.role.as_str()
        )));
    }
    let case_id = case_id(id)?;
    // Bad `If-Match` or `Idempotency-Key` headers are reported only once the caller is known to
    // may take the step: authorization is decided before the request is judged.
    let expected = if_match(&req.headers);
    let (meta, header_error) = match meta(&req, "POST") {
        Ok(meta) => (meta, None),
        Err(e) => (
            CommandMeta {
                idempotency: None,
                ..meta_without_key(&req)
            },
            Some(e),
        ),
    };
    let caller = req.caller.clone();
    let rooms = req.state.rooms.clone();
    let body = req.body.clone();
    let result = req
        .state
        .store
        .execute(case_id, None, meta, move |case: &Case, _| {
            let file = case
                .file
                .as_ref()
                .ok_or_else(|| ApiError::NotFound("no such case".into()))?;
            if !auth::in_scope(&caller, file.room_id.as_str()) {
                return Err(ApiError::NotFound("no such case".into()));
            }
            if !auth::may_take_step(&caller, step, file) {
                return Err(ApiError::Forbidden(format!(
                    "a {} may not {step} this case",
                    caller.role.as_str()
                )));
            }
            if let Some(e) = &header_error {
                return Err(e.clone());
            }
            if let Some(expected) = expected.clone()? {
                if expected != case.version {
                    return Err(ApiError::PreconditionFailed(case.version));
                }
            }
            // The clock is read once the case is loaded: a step without `occurred_at` happens
            // now, after every step the load saw, even when another write won the wait for it.
            parse(&body, Utc::now(), &rooms)
        })
        .await;
    match result {
        Ok(Executed { case, replayed }) => {
            Ok(case_response(StatusCode::OK, &req.caller, &case, replayed))
        }
        Err(e) => Err(execute_error(e)),
    }
}

macro_rules! step_endpoint {
    ($name:ident, $step:expr, $parse:expr) => {
        async fn $name(
            State(state): State<AppState>,
            Caller(caller): Caller,
            RequestId(request_id): RequestId,
            Path(id): Path<String>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            Body(body): Body,
        ) -> Result<Response, ApiError> {
            let req = Request {
                state,
                caller,
                request_id,
                headers,
                body,
                path: uri.path().to_string(),
            };
            run_step(req, &id, $step, $parse).await
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptBody {
    note: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(accept, Step::Accept, |body, now, _| {
    let b: AcceptBody = parse_json(body)?;
    Ok(CaseCommand::Accept {
        when: when(b.occurred_at.as_deref(), now)?,
        note: b.note,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
    occurred_at: Option<String>,
}

step_endpoint!(decline, Step::Decline, |body, now, _| {
    let b: ReasonBody = parse_json(body)?;
    Ok(CaseCommand::Decline {
        when: when(b.occurred_at.as_deref(), now)?,
        reason: b.reason,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    mediator_id: String,
    name: Option<String>,
    lead: Option<bool>,
    occurred_at: Option<String>,
}

step_endpoint!(assign_mediator, Step::AssignMediator, |body, now, _| {
    let b: AssignBody = parse_json(body)?;
    Ok(CaseCommand::AssignMediator {
        when: when(b.occurred_at.as_deref(), now)?,
        mediator_id: b.mediator_id,
        name: b.name,
        lead: b.lead,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecuseBody {
    reason: String,
    occurred_at: Option<String>,
}

async fn recuse_mediator(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    Path((id, mediator_id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let req = Request {
        state,
        caller,
        request_id,
        headers,
        body,
        path: uri.path().to_string(),
    };
    run_step(req, &id, Step::RecuseMediator, move |body, now, _| {
        let b: RecuseBody = parse_json(body)?;
        Ok(CaseCommand::RecuseMediator {
            when: when(b.occurred_at.as_deref(), now)?,
            mediator_id: mediator_id.clone(),
            reason: b.reason,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    summary: String,
    #[serde(default)]
    attendees: Vec<String>,
    occurred_at: Option<String>,
}

step_endpoint!(record_session, Step::RecordSession, |body, now, _| {
    let b: SessionBody = parse_json(body)?;
    Ok(CaseCommand::RecordSession {
        when: when(b.occurred_at.as_deref(), now)?,
        summary: b.summary,
        attendees: b.attendees,
    })
});

fn enum_field<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    expected: String,
) -> Result<T, ApiError> {
    parse(value).ok_or_else(|| ApiError::field(field, format!("must be one of: {expected}")))
}

fn money_field(field: &str, value: Option<&str>) -> Result<Option<Money>, ApiError> {
    value
        .map(|v| Money::parse_yuan(v).map_err(|e| ApiError::from(e.under(field))))
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    agreement: String,
    terms: String,
    agreed_amount: Option<String>,
    performance_due: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(resolve, Step::Resolve, |body, now, _| {
    let b: ResolveBody = parse_json(body)?;
    let performance_due = b
        .performance_due
        .as_deref()
        .map(|d| {
            chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ApiError::field("performance_due", "must be a date such as 2026-12-31")
            })
        })
        .transpose()?;
    Ok(CaseCommand::Resolve {
        when: when(b.occurred_at.as_deref(), now)?,
        agreement: enum_field(
            "agreement",
            &b.agreement,
            AgreementKind::parse,
            AgreementKind::expected(),
        )?,
        terms: b.terms,
        agreed_amount: money_field("agreed_amount", b.agreed_amount.as_deref())?,
        performance_due,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateBody {
    reason: String,
    referred_to: Option<String>,
    note: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(terminate, Step::Terminate, |body, now, _| {
    let b: TerminateBody = parse_json(body)?;
    Ok(CaseCommand::Terminate {
        when: when(b.occurred_at.as_deref(), now)?,
        reason: enum_field(
            "reason",
            &b.reason,
            TerminationReason::parse,
            TerminationReason::expected(),
        )?,
        referred_to: b
            .referred_to
            .as_deref()
            .map(|r| {
                enum_field(
                    "referred_to",
                    r,
                    ReferralRoute::parse,
                    ReferralRoute::expected(),
                )
            })
            .transpose()?,
        note: b.note,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to_room_id: String,
    reason: String,
    occurred_at: Option<String>,
}

step_endpoint!(transfer, Step::Transfer, |body, now, rooms| {
    let b: TransferBody = parse_json(body)?;
    let to_room_id = registered_room("to_room_id", &b.to_room_id, rooms)?;
    Ok(CaseCommand::Transfer {
        when: when(b.occurred_at.as_deref(), now)?,
        to_room_id,
        reason: b.reason,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JudicialBody {
    status: String,
    court: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(
    judicial_confirmation,
    Step::RecordJudicialConfirmation,
    |body, now, _| {
        let b: JudicialBody = parse_json(body)?;
        Ok(CaseCommand::RecordJudicialConfirmation {
            when: when(b.occurred_at.as_deref(), now)?,
            status: enum_field(
                "status",
                &b.status,
                JudicialStatus::parse,
                JudicialStatus::expected(),
            )?,
            court: b.court,
        })
    }
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowUpBody {
    performance: String,
    satisfaction: Option<u8>,
    note: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(follow_up, Step::RecordFollowUp, |body, now, _| {
    let b: FollowUpBody = parse_json(body)?;
    Ok(CaseCommand::RecordFollowUp {
        when: when(b.occurred_at.as_deref(), now)?,
        performance: enum_field(
            "performance",
            &b.performance,
            Performance::parse,
            Performance::expected(),
        )?,
        satisfaction: b.satisfaction,
        note: b.note,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    archive_no: Option<String>,
    occurred_at: Option<String>,
}

step_endpoint!(close, Step::Close, |body, now, _| {
    let b: CloseBody = parse_json(body)?;
    Ok(CaseCommand::Close {
        when: when(b.occurred_at.as_deref(), now)?,
        archive_no: b.archive_no,
    })
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    text: String,
    occurred_at: Option<String>,
}

step_endpoint!(add_note, Step::AddNote, |body, now, _| {
    let b: NoteBody = parse_json(body)?;
    Ok(CaseCommand::AddNote {
        when: when(b.occurred_at.as_deref(), now)?,
        text: b.text,
    })
});

fn registered_room(field: &str, id: &str, rooms: &Rooms) -> Result<RoomId, ApiError> {
    if rooms.get(id).is_none() {
        return Err(ApiError::field(
            field,
            format!("no room {id:?} in the registry"),
        ));
    }
    RoomId::new(id).map_err(|e| e.under(field).into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    room_id: String,
    category: String,
    source: String,
    summary: String,
    claims: Option<String>,
    amount_in_dispute: Option<String>,
    industry: Option<String>,
    parties: Vec<Object<PartyBody>>,
    occurred_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyBody {
    role: String,
    kind: String,
    name: String,
    credit_code: Option<String>,
    id_number: Option<String>,
    phone: Option<String>,
    representative: Option<String>,
}

/// A filing's checked values (everything but the case number).
struct Filing {
    when: When,
    room_id: RoomId,
    category: Category,
    source: Source,
    summary: String,
    claims: Option<String>,
    amount_in_dispute: Option<Money>,
    industry: Option<String>,
    parties: Vec<Party>,
}

/// Keeps a result's value, or adds its field errors to `errors`.
fn collect<T>(errors: &mut Vec<FieldError>, result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(ApiError::Validation(mut e)) => {
            errors.append(&mut e);
            None
        }
        Err(other) => {
            errors.push(FieldError {
                field: "body".into(),
                message: format!("{other:?}"),
            });
            None
        }
    }
}

/// Checks a filing body, reporting every bad field at once rather than only the first.
fn check_filing(b: FileBody, now: DateTime<Utc>, rooms: &Rooms) -> Result<Filing, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let when = collect(&mut errors, when(b.occurred_at.as_deref(), now));
    let room_id = collect(&mut errors, registered_room("room_id", &b.room_id, rooms));
    let category = collect(
        &mut errors,
        enum_field(
            "category",
            &b.category,
            Category::parse,
            Category::expected(),
        ),
    );
    let source = collect(
        &mut errors,
        enum_field("source", &b.source, Source::parse, Source::expected()),
    );
    let amount = collect(
        &mut errors,
        money_field("amount_in_dispute", b.amount_in_dispute.as_deref()),
    );
    let summary = collect(
        &mut errors,
        text("summary", &b.summary, 2000).map_err(ApiError::from),
    );
    let mut parties = Vec::new();
    for (i, Object(p)) in b.parties.iter().enumerate() {
        let at = format!("parties[{i}]");
        let role = collect(
            &mut errors,
            enum_field(
                &format!("{at}.role"),
                &p.role,
                PartyRole::parse,
                PartyRole::expected(),
            ),
        );
        let kind = collect(
            &mut errors,
            enum_field(
                &format!("{at}.kind"),
                &p.kind,
                PartyKind::parse,
                PartyKind::expected(),
            ),
        );
        if let (Some(role), Some(kind)) = (role, kind) {
            let party = Party::new(
                role,
                kind,
                &p.name,
                p.credit_code.as_deref(),
                p.id_number.as_deref(),
                p.phone.as_deref(),
                p.representative.as_deref(),
            )
            .map_err(|e| ApiError::from(e.under(&at)));
            parties.extend(collect(&mut errors, party));
        }
    }
    if parties.len() == b.parties.len() {
        collect(&mut errors, check_parties(&parties).map_err(ApiError::from));
    }
    match (when, room_id, category, source, amount, summary) {
        (
            Some(when),
            Some(room_id),
            Some(category),
            Some(source),
            Some(amount_in_dispute),
            Some(summary),
        ) if errors.is_empty() => Ok(Filing {
            when,
            room_id,
            category,
            source,
            summary,
            claims: b.claims,
            amount_in_dispute,
            industry: b.industry,
            parties,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

async fn file_case(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    if !auth::may_write(&caller) {
        return Err(ApiError::Forbidden(format!(
            "the {} role does not file cases",
            caller.role.as_str()
        )));
    }
    let req = Request {
        state,
        caller,
        request_id,
        headers,
        body,
        path: uri.path().to_string(),
    };
    // Whether the caller may file in the room is decided before the body is judged: the room is
    // read from the JSON alone, whatever else is wrong with it (unknown or missing fields).
    let named_room = serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|v| v.get("room_id").and_then(Value::as_str).map(str::to_string));
    if let Some(room) = named_room {
        if req.state.rooms.get(&room).is_some() && !auth::in_scope(&req.caller, &room) {
            return Err(ApiError::Forbidden(format!(
                "room {room} is not one of the caller's rooms"
            )));
        }
    }
    let raw: FileBody = parse_json(&req.body)?;
    let now = Utc::now();
    let filing = check_filing(raw, now, &req.state.rooms)?;
    let meta = meta(&req, "POST")?;
    let series = format!(
        "{}-{}",
        filing.room_id,
        shenzhen_year(filing.when.occurred_at)
    );
    let case_id = Uuid::new_v4();
    let result = req
        .state
        .store
        .execute(case_id, Some(series), meta, move |_case: &Case, number| {
            let number =
                number.ok_or_else(|| ApiError::Internal("no case number reserved".into()))?;
            let year = shenzhen_year(filing.when.occurred_at);
            let case_no =
                CaseNo::new(filing.room_id.clone(), year, number).map_err(ApiError::from)?;
            Ok(CaseCommand::File {
                when: filing.when,
                filing: Box::new(FileCase {
                    case_id,
                    case_no,
                    room_id: filing.room_id.clone(),
                    category: filing.category,
                    source: filing.source,
                    summary: filing.summary.clone(),
                    claims: filing.claims.clone(),
                    amount_in_dispute: filing.amount_in_dispute,
                    industry: filing.industry.clone(),
                    parties: filing.parties.clone(),
                }),
            })
        })
        .await;
    match result {
        Ok(Executed { case, replayed }) => Ok(case_response(
            StatusCode::CREATED,
            &req.caller,
            &case,
            replayed,
        )),
        Err(e) => Err(execute_error(e)),
    }
}

/// Loads a case the caller may read: 403 for roles that read no cases, 404 for a case that does
/// not exist or lies outside the caller's rooms.
pub(crate) async fn readable_case(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<(Uuid, Case), ApiError> {
    if !auth::may_read_cases(caller) {
        return Err(ApiError::Forbidden(format!(
            "the {} role does not read cases",
            caller.role.as_str()
        )));
    }
    let case_id = case_id(id)?;
    let case = state.store.load(case_id).await?;
    match &case.file {
        Some(file) if auth::in_scope(caller, file.room_id.as_str()) => Ok((case_id, case)),
        _ => Err(ApiError::NotFound("no such case".into())),
    }
}

async fn get_case(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, case) = readable_case(&state, &caller, &id).await?;
    Ok(case_response(StatusCode::OK, &caller, &case, false))
}

async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (case_id, _) = readable_case(&state, &caller, &id).await?;
    let events = state.store.history(case_id).await?;
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let occurred_at = e
                .payload
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|inner| inner.get("occurred_at"))
                .cloned()
                .unwrap_or(Value::Null);
            let meta = |k: &str| e.metadata.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "sequence": e.sequence,
                "type": e.event_type,
                "event_version": e.event_version,
                "occurred_at": occurred_at,
                "recorded_at": e.recorded_at,
                "actor": {"sub": meta("sub"), "role": meta("role")},
                "request_id": meta("request_id"),
                "data": e.payload,
                "prev_hash": e.prev_hash,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(Json(json!({"case_id": case_id, "events": events})))
}

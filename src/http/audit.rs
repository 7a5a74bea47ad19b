//! The audit endpoints: a case's verification and its state as of a moment; the whole log's
//! verification, digest and event feed (auditors and admins).

use super::cases::{case_response, readable_case};
use super::error::ApiError;
use super::{AppState, Caller};
use crate::audit;
use crate::auth::{Principal, Role};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Deserialize;
use serde_json::{json, Value};
use tiaojie_domain::{Case, CaseEvent};

/// The audit routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/cases/{case_id}/verify", get(verify_case))
        .route("/cases/{case_id}/state", get(state_as_of))
        .route("/audit/verify", get(verify_all))
        .route("/audit/digest", get(digest))
        .route("/events", get(events))
}

fn auditor(caller: &Principal) -> Result<(), ApiError> {
    match caller.role {
        Role::Auditor | Role::Admin => Ok(()),
        other => Err(ApiError::Forbidden(format!(
            "the {} role does not read the whole log",
            other.as_str()
        ))),
    }
}

async fn verify_case(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // Auditors and admins verify any case the store knows of, also one whose every event was
    // deleted (its recorded head remains); room staff verify the cases they can read.
    let case_id = match caller.role {
        Role::Auditor | Role::Admin => {
            uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no such case".into()))?
        }
        _ => readable_case(&state, &caller, &id).await?.0,
    };
    let check = audit::verify_case(&state.store, &case_id.to_string())
        .await?
        .ok_or_else(|| ApiError::NotFound("no such case".into()))?;
    let mut body = json!({
        "case_id": case_id,
        "valid": check.first_invalid_sequence.is_none(),
        "events_checked": check.events_checked,
        "head_hash": check.head_hash,
    });
    if let Some(seq) = check.first_invalid_sequence {
        body["first_invalid_sequence"] = json!(seq);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AsOf {
    as_of: Option<String>,
    as_of_sequence: Option<u64>,
}

async fn state_as_of(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    query: Result<Query<AsOf>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let (case_id, _) = readable_case(&state, &caller, &id).await?;
    let events = state.store.history(case_id).await?;
    let take = match (q.as_of, q.as_of_sequence) {
        (Some(t), None) => {
            let t: DateTime<Utc> = DateTime::parse_from_rfc3339(&t)
                .map_err(|_| ApiError::field("as_of", "must be an RFC 3339 time with offset"))?
                .with_timezone(&Utc);
            events
                .iter()
                .take_while(|e| {
                    DateTime::parse_from_rfc3339(&e.recorded_at)
                        .is_ok_and(|r| r.with_timezone(&Utc) <= t)
                })
                .count()
        }
        (None, Some(n)) => {
            if n == 0 || n as usize > events.len() {
                return Err(ApiError::NotFound(format!(
                    "the case has {} events; as_of_sequence must be 1 to {}",
                    events.len(),
                    events.len()
                )));
            }
            n as usize
        }
        _ => {
            return Err(ApiError::field(
                "query",
                "give exactly one of as_of and as_of_sequence",
            ))
        }
    };
    if take == 0 {
        return Err(ApiError::NotFound("the case had no events then".into()));
    }
    let mut case = Case::default();
    for e in events.iter().take(take) {
        let event: CaseEvent = serde_json::from_value(e.payload.clone())
            .map_err(|err| ApiError::Internal(format!("unreadable stored event: {err}")))?;
        case.apply(event);
    }
    Ok(case_response(StatusCode::OK, &caller, &case, false))
}

async fn verify_all(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let report = audit::verify_all(&state.store).await?;
    Ok(Json(json!({
        "cases_checked": report.cases_checked,
        "events_checked": report.events_checked,
        "invalid": report.invalid.iter().map(|(case_id, sequence)| json!({"case_id": case_id, "sequence": sequence})).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestQuery {
    position: Option<i64>,
}

async fn digest(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<DigestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::field("position", e.body_text()))?;
    match audit::digest(&state.store, q.position).await? {
        Some(d) => Ok(Json(
            json!({"position": d.position, "digest": d.digest, "events": d.events}),
        )),
        None => Err(ApiError::NotFound(match q.position {
            Some(p) => format!("position {p} is not in the log (or not final yet)"),
            None => "the log is empty".into(),
        })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auditor(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 1000"));
    }
    if let Some(after) = q.after.filter(|a| *a > 0) {
        if !state.store.position_exists(after).await? {
            return Err(ApiError::field("after", "no event has this position"));
        }
    }
    let page = state
        .store
        .read_log(q.after.filter(|a| *a > 0), limit)
        .await?;
    let next_after = page.last().map(|e| e.position).or(q.after);
    let events: Vec<Value> = page
        .iter()
        .map(|e| {
            json!({
                "position": e.position,
                "case_id": e.case_id,
                "sequence": e.sequence,
                "type": e.event_type,
                "recorded_at": e.recorded_at,
                "data": e.payload,
                "hash": e.hash,
            })
        })
        .collect();
    Ok(Json(json!({"events": events, "next_after": next_after})))
}

//! The read side over HTTP: the case list and the statistics, both served from the read models
//! the projector keeps (eventually consistent; every answer says `as_of_position`). The list is
//! read from its table; the statistics from this process's in-memory copy of the facts
//! (`crate::stats`), brought up to date by each request.

use super::error::ApiError;
use super::{wire, AppState, Caller};
use crate::auth::{self, Principal, Role};
use crate::store::read_models::CaseFilter;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tiaojie_domain::{CaseStatus, Category, Money};
use tiaojie_projections::indicators::{Cell, Indicators, Window};

/// The read-side routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/cases", get(list_cases))
        .route("/statistics", get(statistics))
        .route("/statistics.csv", get(statistics_csv))
        .route("/rooms/{room_id}/statistics", get(room_statistics))
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: QueryResult<T>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::field("query", e.body_text()))
}

fn instant(field: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ApiError::field(field, "must be an RFC 3339 time with offset"))
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    room_id: Option<String>,
    status: Option<String>,
    category: Option<String>,
    mediator_id: Option<String>,
    filed_from: Option<String>,
    filed_to: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_cases(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if !auth::may_read_cases(&caller) {
        return Err(ApiError::Forbidden(format!(
            "the {} role does not read cases",
            caller.role.as_str()
        )));
    }
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 200"));
    }
    if let Some(s) = &q.status {
        CaseStatus::parse(s).ok_or_else(|| ApiError::field("status", "is not a case status"))?;
    }
    if let Some(c) = &q.category {
        Category::parse(c).ok_or_else(|| {
            ApiError::field(
                "category",
                format!("must be one of: {}", Category::expected()),
            )
        })?;
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => {
            let (at, id) = c
                .split_once('_')
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API gave"))?;
            Some((
                at.parse::<i64>()
                    .map_err(|_| ApiError::field("cursor", "is not a cursor this API gave"))?,
                id.to_string(),
            ))
        }
    };
    let filter = CaseFilter {
        scope: match caller.role {
            Role::Mediator | Role::RoomAdmin => Some(caller.rooms.clone()),
            _ => None,
        },
        room_id: q.room_id,
        status: q.status,
        category: q.category,
        mediator_id: q.mediator_id,
        filed_from: instant("filed_from", q.filed_from.as_deref())?,
        filed_to: instant("filed_to", q.filed_to.as_deref())?,
        after,
        limit: limit + 1,
    };
    let (mut rows, position) = state.store.list_cases(&filter).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last()
            .map(|s| format!("{}_{}", s.filed_at.timestamp_micros(), s.case_id))
    } else {
        None
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|s| {
            json!({
                "case_id": s.case_id,
                "case_no": s.case_no,
                "room_id": s.room_id,
                "status": s.status,
                "category": s.category,
                "source": s.source,
                "filed_at": wire::time(s.filed_at),
                "concluded_at": s.concluded_at.map(wire::time),
                "mediators": s.mediators,
                "version": s.version,
            })
        })
        .collect();
    Ok(Json(
        json!({"items": items, "next_cursor": next_cursor, "as_of_position": position}),
    ))
}

fn may_read_statistics(caller: &Principal, room: Option<&str>) -> Result<(), ApiError> {
    match (caller.role, room) {
        (Role::Admin | Role::Auditor | Role::Dashboard, _) => Ok(()),
        (Role::Mediator | Role::RoomAdmin, Some(room)) if auth::in_scope(caller, room) => Ok(()),
        _ => Err(ApiError::Forbidden(
            "statistics across rooms are for dashboards, auditors and admins".into(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn window(from: Option<&str>, to: Option<&str>) -> Result<Window, ApiError> {
    let from = instant("from", from)?;
    let to = instant("to", to)?.unwrap_or_else(Utc::now);
    if from.is_some_and(|f| f >= to) {
        return Err(ApiError::field("from", "must be before to"));
    }
    Ok(Window { from, to })
}

fn number(v: Option<f64>) -> Value {
    v.map(|x| json!(x)).unwrap_or(Value::Null)
}

fn yuan(fen: u64) -> String {
    Money::from_fen(fen)
        .map(|m| m.to_yuan_string())
        .unwrap_or_else(|_| format!("{}.{:02}", fen / 100, fen % 100))
}

/// The indicators as JSON, in API.md's order.
fn indicators_json(i: &Indicators) -> Value {
    json!({
        "filed": i.filed,
        "accepted": i.accepted,
        "declined": i.declined,
        "transferred_in": i.transferred_in,
        "transferred_out": i.transferred_out,
        "resolved": i.resolved,
        "terminated": i.terminated,
        "withdrawn": i.withdrawn,
        "referred": i.referred,
        "closed": i.closed,
        "judicial_confirmed": i.judicial_confirmed,
        "success_rate": number(i.success_rate),
        "followed_up": i.followed_up,
        "performed_full": i.performed_full,
        "performance_rate": number(i.performance_rate),
        "mean_days_to_conclude": number(i.mean_days_to_conclude),
        "median_days_to_conclude": number(i.median_days_to_conclude),
        "p90_days_to_conclude": number(i.p90_days_to_conclude),
        "amount_in_dispute_total": yuan(i.amount_in_dispute_total_fen),
        "amount_agreed_total": yuan(i.amount_agreed_total_fen),
        "open": i.open,
        "overdue_open": i.overdue_open,
    })
}

/// 中文 names of the categories, for dashboards.
fn category_name(c: &str) -> &'static str {
    match c {
        "membership" => "会员纠纷",
        "governance" => "内部治理纠纷",
        "contract" => "合同纠纷",
        "labor" => "劳动纠纷",
        "intellectual_property" => "知识产权纠纷",
        "fees" => "会费及收费纠纷",
        "commercial" => "商事纠纷",
        "tort" => "侵权纠纷",
        _ => "其他纠纷",
    }
}

const UNCLUSTERED: &str = "unclustered";

/// The group a statistics cell (room, category) counts in.
type GroupKey = Box<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

async fn statistics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    may_read_statistics(&caller, None)?;
    let q = query(q)?;
    let window = window(q.from.as_deref(), q.to.as_deref())?;
    let group_by = q.group_by.as_deref().unwrap_or("room");
    // Each cell (room, category) goes to its group; the totals merge every cell.
    let key: GroupKey = match group_by {
        "room" => Box::new(|room, _| Some(room.to_string())),
        "cluster" => {
            let rooms = state.rooms.clone();
            Box::new(move |room, _| {
                Some(
                    rooms
                        .get(room)
                        .and_then(|r| r.cluster.clone())
                        .unwrap_or_else(|| UNCLUSTERED.to_string()),
                )
            })
        }
        "category" => Box::new(|_, category| Some(category.to_string())),
        _ => {
            return Err(ApiError::field(
                "group_by",
                "must be room, cluster or category",
            ))
        }
    };
    let ((by_group, totals), position) = state
        .stats
        .read(|index| index.aggregate_indicators(window, key))
        .await?;
    let indicators_of = |key: &str| {
        indicators_json(
            &by_group
                .get(key)
                .cloned()
                .unwrap_or_else(|| Cell::default().indicators()),
        )
    };
    let groups: Vec<Value> = match group_by {
        "room" => {
            let mut out: Vec<Value> = state
                .rooms
                .all()
                .map(|r| json!({"key": r.room_id, "name": r.name, "indicators": indicators_of(&r.room_id)}))
                .collect();
            // Rooms the facts name but the registry does not (a room since removed from it).
            for (room, indicators) in &by_group {
                if state.rooms.get(room).is_none() {
                    out.push(json!({"key": room, "name": room, "indicators": indicators_json(indicators)}));
                }
            }
            out
        }
        "cluster" => {
            let mut keys: Vec<String> = state
                .rooms
                .all()
                .filter_map(|r| r.cluster.clone())
                .collect();
            keys.sort();
            keys.dedup();
            keys.push(UNCLUSTERED.to_string());
            keys.iter()
                .map(|k| {
                    let name = if k == UNCLUSTERED { "未归属产业集群".to_string() } else { k.clone() };
                    json!({"key": k, "name": name, "indicators": indicators_of(k)})
                })
                .collect()
        }
        _ => Category::ALL
            .iter()
            .map(|c| {
                json!({"key": c.as_str(), "name": category_name(c.as_str()), "indicators": indicators_of(c.as_str())})
            })
            .collect(),
    };
    Ok(Json(json!({
        "as_of_position": position,
        "from": window.from.map(wire::time),
        "to": wire::time(window.to),
        "group_by": group_by,
        "totals": indicators_json(&totals),
        "groups": groups,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomStatsQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn room_statistics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(room_id): Path<String>,
    q: QueryResult<RoomStatsQuery>,
) -> Result<Json<Value>, ApiError> {
    if state.rooms.get(&room_id).is_none() {
        return Err(ApiError::NotFound(format!("no room {room_id}")));
    }
    may_read_statistics(&caller, Some(&room_id))?;
    let q = query(q)?;
    let window = window(q.from.as_deref(), q.to.as_deref())?;
    let ((by_category_cells, room, (by_source, monthly)), position) = state
        .stats
        .read(|index| {
            let (cells, room) = index.aggregate(window, |r, category| {
                (r == room_id).then(|| category.to_string())
            });
            (cells, room, index.room_breakdown(&room_id, window))
        })
        .await?;
    let mut by_category = Map::new();
    for c in Category::ALL {
        by_category.insert(c.as_str().to_string(), json!(0));
    }
    for (category, cell) in &by_category_cells {
        let filed = cell
            .counts
            .get(&tiaojie_projections::facts::FactKind::Filed)
            .copied()
            .unwrap_or(0);
        by_category.insert(category.clone(), json!(filed));
    }
    let mut sources = Map::new();
    for s in tiaojie_domain::Source::ALL {
        sources.insert(
            s.as_str().to_string(),
            json!(by_source.get(s.as_str()).copied().unwrap_or(0)),
        );
    }
    Ok(Json(json!({
        "room_id": room_id,
        "as_of_position": position,
        "from": window.from.map(wire::time),
        "to": wire::time(window.to),
        "indicators": indicators_json(&room.indicators()),
        "by_category": by_category,
        "by_source": sources,
        "monthly": monthly.iter().map(|(m, [f, r, t])| json!({"month": m, "filed": f, "resolved": r, "terminated": t})).collect::<Vec<_>>(),
    })))
}

const CSV_COLUMNS: &[&str] = &[
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

fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

async fn statistics_csv(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryResult<RoomStatsQuery>,
) -> Result<Response, ApiError> {
    may_read_statistics(&caller, None)?;
    let q = query(q)?;
    let window = window(q.from.as_deref(), q.to.as_deref())?;
    let ((by_room, _), position) = state
        .stats
        .read(|index| index.aggregate_indicators(window, |room, _| Some(room.to_string())))
        .await?;
    let mut out = String::from("room_id,name,kind,cluster");
    for c in CSV_COLUMNS {
        out.push(',');
        out.push_str(c);
    }
    out.push('\n');
    for r in state.rooms.all() {
        let ind = indicators_json(
            &by_room
                .get(&r.room_id)
                .cloned()
                .unwrap_or_else(|| Cell::default().indicators()),
        );
        let kind = serde_json::to_value(r.kind).unwrap_or(Value::Null);
        let head = [json!(r.room_id), json!(r.name), kind, json!(r.cluster)];
        let fields: Vec<String> = head
            .iter()
            .chain(CSV_COLUMNS.iter().map(|c| &ind[*c]))
            .map(csv_field)
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tiaojie-statistics.csv\"".to_string(),
            ),
            (
                header::HeaderName::from_static("x-as-of-position"),
                position.to_string(),
            ),
        ],
        out,
    )
        .into_response())
}

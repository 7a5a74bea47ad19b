//! `GET /api/v1/rooms` and `/rooms/{room_id}`: the registry, for every authenticated role.

use super::error::ApiError;
use super::{AppState, Caller};
use crate::rooms::Room;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The rooms routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list))
        .route("/rooms/{room_id}", get(one))
}

async fn list(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let rooms: Vec<&Room> = state.rooms.all().collect();
    Json(json!({ "items": rooms }))
}

async fn one(
    State(state): State<AppState>,
    _caller: Caller,
    Path(room_id): Path<String>,
) -> Result<Json<Room>, ApiError> {
    state
        .rooms
        .get(&room_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no room {room_id}")))
}

//! Liveness and readiness: `/healthz` says the process is up, `/readyz` that the database answers
//! and every migration is applied. Neither needs a token.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "store": state.store.kind()})),
        ),
        Err(e) => {
            tracing::warn!(reason = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "store": state.store.kind()})),
            )
        }
    }
}

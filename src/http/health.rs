//! Liveness and readiness: `/healthz` says the process is up, `/readyz` that the database answers,
//! every migration is applied and the projector task is running (projecting or standing by). Neither needs a token.

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
    let projector = &state.projector;
    let running = projector.running.load(std::sync::atomic::Ordering::SeqCst);
    let active = projector.active.load(std::sync::atomic::Ordering::SeqCst);
    let position = projector.position.load(std::sync::atomic::Ordering::SeqCst);
    let store_ready = state.store.ready().await;
    if running && store_ready.is_ok() {
        return (
            StatusCode::OK,
            Json(
                json!({"status": "ready", "store": state.store.kind(), "projector": {"active": active, "position": position}}),
            ),
        );
    }
    match store_ready.and(Err(crate::store::StoreError::Database(
        "projector not running".into(),
    ))) {
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

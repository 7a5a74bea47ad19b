//! The HTTP API (axum). One module per resource, each with its own `router()`; this module puts
//! them together, holds the shared state and the extractors every handler uses.
//!
//! Architecture invariant: only `src/http` knows JSON wire types and status codes. Handlers
//! convert wire bodies into domain commands and domain results into wire answers; they decide
//! nothing about cases (the domain does) or about permissions (`crate::auth` does).

pub mod audit;
pub mod cases;
pub mod error;
pub mod health;
pub mod rooms;
pub mod statistics;
pub mod wire;

use crate::auth::{JwtKey, Principal};
use crate::rooms::Rooms;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use axum::Router;
use error::ApiError;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The event store.
    pub store: Store,
    /// The rooms registry.
    pub rooms: Arc<Rooms>,
    /// The token key.
    pub key: Arc<JwtKey>,
    /// What the projector reports (for `/readyz`).
    pub projector: Arc<crate::projector::ProjectorStatus>,
    /// This process's statistics, answered from memory.
    pub stats: crate::stats::StatsMirror,
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .nest(
            "/api/v1",
            Router::new()
                .merge(rooms::router())
                .merge(cases::router())
                .merge(audit::router())
                .merge(statistics::router())
                .fallback(not_found),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The request's id: the caller's `X-Request-Id` when it is sane, else a new UUID. It goes into
/// the events the request records and back in the response.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut request: Request, next: axum::middleware::Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string())))
    }
}

/// The verified caller. Extracting it answers 401 for a missing, malformed, wrongly signed,
/// expired or non-HS256 token.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthorized)?;
        let now = chrono::Utc::now().timestamp();
        match state.key.verify(token.trim(), now) {
            Ok(claims) => Ok(Caller(claims)),
            Err(reason) => {
                tracing::info!(%reason, "token refused");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// A raw request body within [`BODY_LIMIT`] (413 beyond it).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::field("body", rejection.body_text())),
        }
    }
}

/// Parses a JSON body into a wire type; errors name the field (`parties[0].role`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body is a JSON object; serde would also take a struct from an array, by
    // position, so anything else is refused before it is read.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::field("body", "a JSON object is required"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        // A syntax error or a cut-off body is the body's fault, not a field's (serde_path_to_error
        // would name the key being read, or "?" between keys).
        let field =
            if path == "." || path.contains('?') || e.inner().is_syntax() || e.inner().is_eof() {
                "body".to_string()
            } else {
                path
            };
        let message = e.inner().to_string();
        // serde_json appends " at line L column C"; keep the message short and data-free.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        ApiError::field(field, message)
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::field("body", "trailing characters after the JSON value"))?;
    Ok(value)
}

/// The version named by `If-Match: "<version>"`, if any (422 when it is not a version).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::field("If-Match", "must be a case version such as \"3\""))
}

/// A value that must arrive as a JSON object. serde would also fill a struct from an array, by
/// position; a nested wire struct wrapped in `Object` refuses that, naming the field.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Only(std::marker::PhantomData))
            .map(Object)
    }
}

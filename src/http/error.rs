//! The one HTTP error type. Every refusal the API gives is an [`ApiError`], turned into an
//! RFC 9457 problem (`application/problem+json`) in exactly one place, its `IntoResponse`.
//! Internal errors are logged with the request id and never echoed.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tiaojie_domain::CaseError;

use crate::store::StoreError;

/// One invalid field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `parties[0].name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A refusal, with the status each variant answers.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 422 `validation_failed`: malformed body, bad or unknown field.
    Validation(Vec<FieldError>),
    /// 409 `invalid_transition`: the step is not allowed now (or a precondition is unmet).
    InvalidTransition(String),
    /// 409 `version_conflict`: a concurrent write won.
    VersionConflict,
    /// 412 `precondition_failed`: `If-Match` is not the current version.
    PreconditionFailed(u64),
    /// 422 `idempotency_key_reused`: the key came before with another request.
    IdempotencyKeyReused,
    /// 404 `not_found`.
    NotFound(String),
    /// 401 `unauthorized`.
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden(String),
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 503 `unavailable`: the database is unreachable; nothing was written.
    Unavailable,
    /// 500 `internal`: a fault of ours; logged, not echoed.
    Internal(String),
}

impl ApiError {
    /// One invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "The request is not valid",
            ),
            ApiError::InvalidTransition(_) => (
                StatusCode::CONFLICT,
                "invalid_transition",
                "The step is not allowed now",
            ),
            ApiError::VersionConflict => (
                StatusCode::CONFLICT,
                "version_conflict",
                "A concurrent write won",
            ),
            ApiError::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "The case has another version",
            ),
            ApiError::IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The body is over 64 KiB",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The database is unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Validation(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::InvalidTransition(d) | ApiError::NotFound(d) | ApiError::Forbidden(d) => {
                d.clone()
            }
            ApiError::VersionConflict => {
                "another write to this case was recorded first; reload it and retry".into()
            }
            ApiError::PreconditionFailed(current) => {
                format!("If-Match does not name the current version ({current})")
            }
            ApiError::IdempotencyKeyReused => {
                "this Idempotency-Key was used before with a different request".into()
            }
            ApiError::Unauthorized => "a valid bearer token is required".into(),
            ApiError::PayloadTooLarge => "request bodies may be at most 64 KiB".into(),
            ApiError::MethodNotAllowed => "this resource does not support the method".into(),
            ApiError::Unavailable => {
                "the database cannot be reached; nothing was written, retry later".into()
            }
            ApiError::Internal(_) => "an internal error occurred; it was logged".into(),
        }
    }
}

impl From<CaseError> for ApiError {
    fn from(e: CaseError) -> ApiError {
        match e {
            CaseError::Invalid { field, message } => ApiError::field(field, message),
            CaseError::InvalidTransition { .. } | CaseError::PreconditionUnmet { .. } => {
                ApiError::InvalidTransition(e.to_string())
            }
            CaseError::NotFiled => ApiError::NotFound("no such case".into()),
            CaseError::AlreadyFiled => ApiError::VersionConflict,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        if let ApiError::Internal(reason) = &self {
            tracing::error!(%reason, "internal error");
        }
        let problem = Problem {
            kind: format!("/problems/{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
            code,
            errors: match &self {
                ApiError::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

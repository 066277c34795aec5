//! `api::Error`: every failure a handler can return, mapped to a status in one place and
//! rendered as `{ "error": { "code", "message", "details" } }`. 5xx bodies never carry
//! internals; those go to the server log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not valid JSON, or a parameter cannot be parsed.
    #[error("{0}")]
    Malformed(String),
    /// A field is present and well-formed but not allowed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Items of a batch that are not allowed, each naming its index and field.
    #[error("{} of the batch's jobs are invalid (first: {}: {}); nothing was stored", .0.len(), .0[0].field, .0[0].message)]
    InvalidItems(Vec<crate::dto::ItemError>),
    #[error("{0}")]
    NotFound(String),
    /// The state machine refuses the change.
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large (limit {limit} bytes)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No credentials, or credentials that are unknown or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// Known credentials whose role is too weak.
    #[error("this needs the {needed} role; the token has {has}")]
    Forbidden {
        needed: retryd_core::Role,
        has: retryd_core::Role,
    },
    /// An instance-wide operation (organizations, metrics) asked by an organization's token.
    #[error("this needs an instance token; the token belongs to organization '{org}'")]
    InstanceOnly { org: String },
    /// A cookie-authenticated change without the session's CSRF token.
    #[error(
        "missing or wrong X-CSRF-Token header: a dashboard session must send the token from GET /api/v1/session"
    )]
    Csrf,
    /// A request a page on another site could have sent (Host, Origin).
    #[error("{0}")]
    CrossSite(String),
    #[error(
        "too many requests (this token, this address or live follows); retry in {retry_after_secs} s"
    )]
    RateLimited { retry_after_secs: u64 },
    #[error("the database is unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Value) {
        match self {
            Error::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_request", Value::Null),
            Error::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value",
                json!({ "field": field }),
            ),
            Error::InvalidItems(items) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_items",
                json!({ "items": items }),
            ),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", Value::Null),
            Error::Conflict(_) => (StatusCode::CONFLICT, "invalid_transition", Value::Null),
            Error::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                json!({ "limit_bytes": limit }),
            ),
            Error::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Value::Null,
            ),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", Value::Null),
            Error::Forbidden { needed, has } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                json!({ "needed": needed, "role": has }),
            ),
            Error::InstanceOnly { org } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                json!({ "needed": "instance", "org": org }),
            ),
            Error::Csrf => (StatusCode::FORBIDDEN, "csrf", Value::Null),
            Error::CrossSite(_) => (StatusCode::FORBIDDEN, "cross_site", Value::Null),
            Error::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                json!({ "retry_after_secs": retry_after_secs }),
            ),
            Error::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", Value::Null),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", Value::Null),
        }
    }
}

impl From<retryd_store::Error> for Error {
    fn from(e: retryd_store::Error) -> Self {
        use retryd_store::Error as S;
        match e {
            S::NotFound(id) => Error::NotFound(format!("job {id} not found")),
            S::Transition(t) => Error::Conflict(format!("invalid transition: {t}")),
            S::LeaseLost { .. } | S::Conflict(_) => Error::Conflict(e.to_string()),
            S::Backend(message) => {
                tracing::error!(error = %message, "database error");
                Error::Unavailable
            }
            S::Corrupt(message) => Error::Internal(message),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, details) = self.parts();
        if let Error::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body =
            json!({ "error": { "code": code, "message": self.to_string(), "details": details } });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::RateLimited { retry_after_secs } => {
                headers.insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
            }
            Error::Unauthenticated(_) => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"retryd\""),
                );
            }
            _ => {}
        }
        response
    }
}

//! Extractors whose rejections speak the API's error shape.

use crate::error::Error;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// `Json<T>` with 400 for syntax, 422 naming the field for values, 413 for size.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde_path_to_error's message reads "field.path: what is wrong".
            let text =
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string());
            let (field, message) = match text.split_once(": ") {
                Some((path, message)) if !path.contains(' ') => {
                    (path.to_owned(), message.to_owned())
                }
                _ => ("body".to_owned(), text),
            };
            Error::invalid(field, message)
        }
        JsonRejection::JsonSyntaxError(e) => Error::Malformed(format!(
            "body is not valid JSON: {}",
            std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
        )),
        JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Error::TooLarge { limit: BODY_LIMIT }
        }
        other => Error::Malformed(other.body_text()),
    }
}

/// `Query<T>` with 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Error::invalid(
                "query",
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string()),
            )),
            Err(other) => Err(Error::Malformed(other.body_text())),
        }
    }
}

/// A `limit` query parameter: `default` when absent, refused naming the field and the
/// range when outside 1..=`max`.
pub fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, Error> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(
            "limit",
            format!("must be between 1 and {max}, got {n}"),
        )),
    }
}

//! The CLI's client of the HTTP API.

use futures::StreamExt;
use retryd_core::explain::Diagnosis;
use retryd_core::job::Job;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach retryd at {server}: {reason}\n  is `retryd serve` running there? Point the CLI elsewhere with --server or RETRYD_SERVER."
    )]
    Unreachable { server: String, reason: String },
    #[error("{message}{}", field.as_ref().map(|f| format!(" (field: {f})")).unwrap_or_default())]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
        /// The error's `details`, e.g. the items of a refused batch.
        details: Option<serde_json::Value>,
    },
    #[error("unexpected reply from the server: {0}")]
    Decode(String),
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    pub waiting_reason: Option<String>,
    pub diagnosis: Option<Diagnosis>,
    pub fingerprint: Option<String>,
    /// A pipeline's current step: "running: confirm, attempt 2/3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_status: Option<String>,
    /// Present on submit replies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Replies are printed as text: their strings get control sequences made visible.
    clean: bool,
}

/// Every string of a reply through [`crate::output::clean`]: job data and server messages
/// reach the terminal only that way.
fn clean_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(cleaned) = crate::output::clean(text) {
                *text = cleaned;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(clean_strings),
        _ => {}
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

impl Client {
    /// A client of `server`; with `org`, every request acts in that organization.
    pub fn new(server: &str, token: Option<&str>, org: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(org) = org.filter(|o| !o.is_empty())
            && let Ok(value) = reqwest::header::HeaderValue::from_str(org)
        {
            headers.insert("x-retryd-org", value);
        }
        if let Some(token) = token.filter(|t| !t.is_empty())
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .expect("HTTP client builds");
        Client {
            http,
            base: server.trim_end_matches('/').to_owned(),
            clean: true,
        }
    }

    /// For `--json`: replies are printed as JSON, whose encoding escapes control characters
    /// itself, so their strings are kept as they are.
    pub fn keeping_raw_strings(mut self, raw: bool) -> Self {
        self.clean = !raw;
        self
    }

    fn parse<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ClientError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        if self.clean {
            clean_strings(&mut value);
        }
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        ClientError::Unreachable {
            server: self.base.clone(),
            reason,
        }
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status.is_success() {
            return self.parse(&bytes);
        }
        // Error messages are printed as text whatever the output format.
        match self
            .clone()
            .keeping_raw_strings(false)
            .parse::<ErrorBody>(&bytes)
        {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                message: if status == reqwest::StatusCode::UNAUTHORIZED {
                    format!(
                        "{}\n  set RETRYD_TOKEN to an API token (the first one is printed by `retryd serve` on its first start)",
                        body.error.message
                    )
                } else {
                    body.error.message
                },
                code: body.error.code,
                field: body
                    .error
                    .details
                    .as_ref()
                    .and_then(|d| d.get("field").and_then(|f| f.as_str()).map(str::to_owned)),
                details: body.error.details,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: format!(
                    "HTTP {status}: {}",
                    crate::output::clean(&String::from_utf8_lossy(&bytes))
                ),
                field: None,
                details: None,
            }),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        self.decode(response).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn patch<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    /// Follows an NDJSON stream, calling `each` for every line until the server ends it.
    pub async fn follow_ndjson<T: DeserializeOwned>(
        &self,
        path: &str,
        mut each: impl FnMut(T),
    ) -> Result<(), ClientError> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return self.decode::<serde_json::Value>(response).await.map(|_| ());
        }
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            pending.extend_from_slice(&chunk);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                each(self.parse(&line)?);
            }
        }
        Ok(())
    }
}

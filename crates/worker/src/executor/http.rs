//! The `http` action: one request; the status, a few headers and the start of the body go
//! to the attempt's log, secret header values redacted.

use super::guard::{GuardedResolver, HostGuard, Refused, refused_in};
use super::{Outcome, OutputLine, Stopped};
use chrono::{DateTime, Utc};
use retryd_core::job::{HttpAction, Stream};
use retryd_core::redact::Redactor;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Without a timeout of its own or its policy's, a request gives up after this.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a response body is kept in the log.
const BODY_EXCERPT_BYTES: usize = 4096;
/// How much of a response body is read when a pipeline step exports values from it.
const EXPORT_BODY_BYTES: usize = 1024 * 1024;
/// Response headers worth keeping in the log.
const HEADERS_OF_INTEREST: [&str; 5] = [
    "content-type",
    "retry-after",
    "location",
    "x-request-id",
    "www-authenticate",
];

/// Redirect hops followed, each checked by the guard.
const MAX_REDIRECTS: usize = 10;

/// One client for the engine (it pools connections), always behind the SSRF guard.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    guard: Arc<HostGuard>,
}

impl HttpClient {
    pub fn new(guard: HostGuard) -> Self {
        let guard = Arc::new(guard);
        let hops = guard.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            // A literal address is checked here; a name is checked when it is resolved.
            match hops.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => {
                    let message = format!("redirect to {}: {refused}", attempt.url());
                    attempt.error(Refused(message))
                }
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("retryd/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .redirect(redirects)
            // An HTTP_PROXY would resolve names itself, where the guard cannot check them.
            .no_proxy()
            .build()
            .expect("HTTP client builds");
        HttpClient { client, guard }
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The innermost cause, which is the one that says what happened.
fn root_cause(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = cause.to_string();
        source = cause.source();
    }
    message
}

pub async fn run(
    http: &HttpClient,
    action: &HttpAction,
    timeout: Option<Duration>,
    stop: CancellationToken,
    lines: mpsc::Sender<OutputLine>,
    keep_body: bool,
) -> Outcome {
    let redactor = Redactor::new(&action.secrets_list());
    let emit = |stream: Stream, text: String| {
        let line = OutputLine {
            at: Utc::now(),
            stream,
            line: redactor.redact(&text),
        };
        let lines = lines.clone();
        async move {
            let _ = lines.send(line).await;
        }
    };
    let method = match reqwest::Method::from_bytes(action.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => return invalid(format!("invalid method {}", action.method)),
    };
    let mut request = http
        .client
        .request(method, &action.url)
        .timeout(timeout.unwrap_or(DEFAULT_TIMEOUT));
    for (name, value) in &action.headers {
        request = request.header(name.as_str(), value.value());
    }
    if let Some(body) = &action.body {
        request = request.body(body.clone());
    }
    let request = match request.build() {
        Ok(request) => request,
        Err(e) => {
            return invalid(format!(
                "{} {}: {}",
                action.method,
                action.url,
                root_cause(&e)
            ));
        }
    };
    if let Err(refused) = http.guard.check_url(request.url()) {
        return invalid(format!(
            "{} {}: refused by the SSRF guard: {refused}",
            action.method, action.url
        ));
    }
    let started = Instant::now();
    let sent = tokio::select! {
        response = http.client.execute(request) => response,
        _ = stop.cancelled() => return Outcome { stopped: Some(Stopped::Requested), ..Outcome::default() },
    };
    let took = started.elapsed();
    let mut response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            emit(
                Stream::System,
                format!(
                    "{} {}: no answer within {:.1}s",
                    action.method,
                    action.url,
                    took.as_secs_f64()
                ),
            )
            .await;
            return Outcome {
                stopped: Some(Stopped::Timeout),
                ..Outcome::default()
            };
        }
        Err(e) if refused_in(&e).is_some() => {
            let refused = refused_in(&e).map(ToString::to_string).unwrap_or_default();
            return invalid(format!(
                "{} {}: refused by the SSRF guard: {refused}",
                action.method, action.url
            ));
        }
        Err(e) => {
            emit(
                Stream::Stderr,
                format!(
                    "{} {}: {} ({})",
                    action.method,
                    action.url,
                    root_cause(&e),
                    e
                ),
            )
            .await;
            return Outcome {
                connect_error: true,
                ..Outcome::default()
            };
        }
    };
    let status = response.status();
    let summary = format!("{} {} → {status}", action.method, action.url);
    emit(
        Stream::System,
        format!("{summary} in {} ms", took.as_millis()),
    )
    .await;
    for name in HEADERS_OF_INTEREST {
        if let Some(value) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
            emit(Stream::System, format!("{name}: {value}")).await;
        }
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let limit = if keep_body {
        EXPORT_BODY_BYTES
    } else {
        BODY_EXCERPT_BYTES + redactor.lookahead()
    };
    let mut body: Vec<u8> = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())])
            }
            _ => break,
        }
    }
    // Hidden before the cut, with a secret's length read past it, so that a secret falling
    // across the excerpt's end is not left half shown.
    let excerpt = redactor.excerpt(
        &body[..body.len().min(BODY_EXCERPT_BYTES + redactor.lookahead())],
        BODY_EXCERPT_BYTES,
    );
    for line in excerpt.lines() {
        let _ = lines
            .send(OutputLine {
                at: Utc::now(),
                stream: Stream::Stdout,
                line: line.to_owned(),
            })
            .await;
    }
    Outcome {
        ok: action.is_success(status.as_u16()),
        http_status: Some(status.as_u16()),
        retry_after,
        summary: Some(redactor.redact(&summary)),
        body: keep_body.then(|| String::from_utf8_lossy(&body).into_owned()),
        ..Outcome::default()
    }
}

fn invalid(message: String) -> Outcome {
    Outcome {
        start_error: Some(message),
        invalid_action: true,
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

//! Notifications (SPEC §6): which deliveries a job's change enqueues, and one delivery to a
//! generic JSON webhook, a Slack-compatible webhook or an SMTP server.
//!
//! Deliveries are rows in the store, enqueued in the transaction that records the change, so
//! that a crash cannot lose one; the engine's notifier claims them under a lease (one node
//! delivers each), and a failed try is classified like an `http` attempt and retried under
//! the sink's policy.

use crate::attempt::classify_failure;
use crate::engine::Engine;
use crate::executor::http;
use crate::tail::Tail;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use retryd_core::decide::{Decision, FailedAttempt, decide};
use retryd_core::job::{EnvValue, HttpAction, Job};
use retryd_core::redact::Redactor;
use retryd_core::{Class, Policy};
use retryd_store::channels::{Destination, On, Sink, channel_org};
use retryd_store::{AttemptResult, ClaimedDelivery, DeliveryNext, NewNotification, Next};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The deliveries a recorded result enqueues, one per sink that wants its event.
pub fn for_result(sinks: &[Sink], job: &Job, result: &AttemptResult) -> Vec<NewNotification> {
    let Some(event) = event_of(&result.next, result.lease.attempt) else {
        return Vec::new();
    };
    let wanted: Vec<&Sink> = sinks.iter().filter(|s| s.on.contains(&event)).collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let payload = payload(job, result, event);
    wanted
        .into_iter()
        .map(|sink| NewNotification {
            sink: sink.name.clone(),
            event: event.as_str().to_owned(),
            payload: payload.clone(),
        })
        .collect()
}

/// The event a result is, if any: a success is one only after a retry; cancels, expiries
/// and shutdown releases are none.
pub fn event_of(next: &Next, attempt: u32) -> Option<On> {
    match next {
        Next::Failed => Some(On::Failed),
        Next::Succeeded if attempt > 1 => Some(On::Succeeded),
        // A lost attempt is retried too, though it does not count.
        Next::Retry { .. } | Next::Lost { .. } => Some(On::Retrying),
        _ => None,
    }
}

fn payload(job: &Job, result: &AttemptResult, event: On) -> Value {
    let attempt = result.lease.attempt;
    let what = match event {
        On::Failed => format!("failed after {attempt} attempt(s)"),
        On::Succeeded => format!("succeeded on attempt {attempt}"),
        On::Retrying => format!("attempt {attempt} failed; retrying"),
    };
    let target = job
        .target
        .as_deref()
        .map(|t| format!(" on {t}"))
        .unwrap_or_default();
    // The error quotes the job's output: hide the job's secrets again, whole, in the text
    // that leaves the node.
    let redactor = Redactor::new(&job.action.secrets());
    let hide = |text: &str| redactor.redact(text);
    json!({
        "event": event.as_str(),
        "summary": hide(&format!("retryd: job {} ({}{target}) {what}: {}", job.id, job.kind, result.reason)),
        "job_id": job.id,
        "org": job.org,
        "queue": job.queue,
        "kind": job.kind,
        "target": job.target,
        "state": result.next.state(),
        "attempt": attempt,
        "max_attempts": job.policy.max_attempts,
        "error": result.error.as_deref().map(hide),
        "class": result.class,
        "rule": result.rule,
        "reason": hide(&result.reason),
        "at": result.now,
    })
}

fn summary(payload: &Value) -> String {
    payload["summary"]
        .as_str()
        .unwrap_or("retryd event")
        .to_owned()
}

/// Slack's shape: a fallback `text` and a section block with the details.
fn slack_body(payload: &Value) -> Value {
    let field = |name: &str| payload[name].as_str().unwrap_or("-").to_owned();
    let details = format!(
        "*{}*\n*job* `{}` · *kind* {} · *target* {} · *attempt* {}/{}\n*error* ({}): {}",
        summary(payload),
        field("job_id"),
        field("kind"),
        field("target"),
        payload["attempt"],
        payload["max_attempts"],
        field("class"),
        field("error"),
    );
    json!({
        "text": summary(payload),
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": details } }],
    })
}

/// How one try ended.
struct Tried {
    ok: bool,
    status: Option<i32>,
    error: Option<String>,
    class: Class,
    retry_after: Option<Duration>,
}

/// Delivers one claimed notification and decides what comes next.
pub(crate) async fn deliver(
    engine: &Engine,
    sink: Option<&Sink>,
    claimed: &ClaimedDelivery,
    stop: CancellationToken,
) -> (bool, Option<i32>, Option<String>, DeliveryNext) {
    let Some(sink) = sink else {
        let error = format!(
            "sink {} is not configured on node {}",
            claimed.notification.sink,
            engine.config().node
        );
        return (false, None, Some(error), DeliveryNext::Failed);
    };
    // An instance sink's policy is a shared one (built-in or configured); a channel's may
    // also be its organization's.
    let org = channel_org(&sink.name).unwrap_or(retryd_core::org::DEFAULT_ORG);
    let policy = engine
        .policies(org)
        .get(&sink.policy)
        .cloned()
        .unwrap_or_default();
    let payload = &claimed.notification.payload;
    let tried = match &sink.destination {
        Destination::Webhook { url, headers } => {
            post(
                engine,
                &policy,
                sink,
                url,
                headers,
                payload.to_string(),
                stop,
            )
            .await
        }
        Destination::Slack { url } => {
            let body = slack_body(payload).to_string();
            post(engine, &policy, sink, url, &BTreeMap::new(), body, stop).await
        }
        Destination::Email {
            host,
            port,
            from,
            to,
        } => email(host, *port, from, to, sink.timeout, payload).await,
    };
    if tried.ok {
        return (true, tried.status, None, DeliveryNext::Delivered);
    }
    let failed = FailedAttempt {
        attempt: claimed.number,
        class: tried.class,
        now: engine.now(),
        first_started_at: Some(claimed.notification.created_at),
        deadline: None,
        previous_delay: None,
        retry_after: tried.retry_after,
    };
    let next = match decide(&policy, &failed, &mut rand::rng()) {
        Decision::Retry { at, .. } => DeliveryNext::Retry { at },
        Decision::Fail { .. } | Decision::Expire { .. } => DeliveryNext::Failed,
    };
    (false, tried.status, tried.error, next)
}

async fn post(
    engine: &Engine,
    policy: &Policy,
    sink: &Sink,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: String,
    stop: CancellationToken,
) -> Tried {
    let mut all: BTreeMap<String, EnvValue> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                EnvValue::Marked {
                    value: v.clone(),
                    secret: true,
                },
            )
        })
        .collect();
    all.insert(
        "content-type".into(),
        EnvValue::Plain("application/json".into()),
    );
    let action = HttpAction {
        method: "POST".into(),
        url: url.to_owned(),
        headers: all,
        body: Some(body),
        timeout: Some(sink.timeout),
        success_statuses: Vec::new(),
    };
    // The executor reports its lines as it goes; they feed the classification only.
    let (lines, mut received) = mpsc::channel(64);
    let collect = async {
        let mut tail = Tail::new(16 * 1024);
        while let Some(line) = received.recv().await {
            tail.push(line);
        }
        tail
    };
    let (outcome, tail) = tokio::join!(
        http::run(
            &engine.inner.http,
            &action,
            Some(sink.timeout),
            stop,
            lines,
            false
        ),
        collect
    );
    let status = outcome.http_status.map(i32::from);
    if outcome.ok {
        return Tried {
            ok: true,
            status,
            error: None,
            class: Class::Transient,
            retry_after: None,
        };
    }
    let (classification, error) = classify_failure(policy, &outcome, &tail);
    Tried {
        ok: false,
        status,
        error: Some(error),
        class: classification.class,
        retry_after: outcome.retry_after,
    }
}

async fn email(
    host: &str,
    port: u16,
    from: &str,
    to: &[String],
    timeout: Duration,
    payload: &Value,
) -> Tried {
    let failed = |class, error: String| Tried {
        ok: false,
        status: None,
        error: Some(error),
        class,
        retry_after: None,
    };
    let mut builder = Message::builder().subject(summary(payload));
    match from.parse::<Mailbox>() {
        Ok(mailbox) => builder = builder.from(mailbox),
        Err(e) => return failed(Class::Permanent, format!("from {from:?}: {e}")),
    }
    for address in to {
        match address.parse::<Mailbox>() {
            Ok(mailbox) => builder = builder.to(mailbox),
            Err(e) => return failed(Class::Permanent, format!("to {address:?}: {e}")),
        }
    }
    let body = serde_json::to_string_pretty(payload).unwrap_or_default();
    let message = match builder.body(format!("{}\n\n{body}\n", summary(payload))) {
        Ok(message) => message,
        Err(e) => return failed(Class::Permanent, format!("cannot build the e-mail: {e}")),
    };
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(timeout))
        .build();
    match mailer.send(message).await {
        Ok(response) => Tried {
            ok: true,
            status: Some(i32::from(u16::from(response.code()))),
            error: None,
            class: Class::Transient,
            retry_after: None,
        },
        Err(e) => {
            // A 5xx reply is the server's final word; anything else (4xx, connection) passes.
            let class = if e.is_permanent() {
                Class::Permanent
            } else {
                Class::Transient
            };
            let status = e.status().map(|code| i32::from(u16::from(code)));
            Tried {
                status,
                ..failed(class, format!("SMTP {host}:{port}: {e}"))
            }
        }
    }
}

/// When the notifier should look again: the next due delivery, capped.
pub(crate) fn pause_until(
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cap: Duration,
) -> Duration {
    match next {
        Some(at) if at > now => (at - now).to_std().unwrap_or(cap).min(cap),
        Some(_) => Duration::from_millis(10),
        None => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_events_only_when_someone_would_want_them() {
        let retry = Next::Retry {
            at: Utc::now(),
            delay: Duration::from_secs(1),
            delay_reason: "backoff".into(),
        };
        assert_eq!(event_of(&Next::Failed, 1), Some(On::Failed));
        assert_eq!(event_of(&retry, 1), Some(On::Retrying));
        assert_eq!(event_of(&Next::Succeeded, 1), None, "no retry, no news");
        assert_eq!(event_of(&Next::Succeeded, 3), Some(On::Succeeded));
        assert_eq!(event_of(&Next::Cancelled, 2), None);
        assert_eq!(event_of(&Next::Expired, 2), None);
        assert_eq!(event_of(&Next::Released { at: Utc::now() }, 2), None);
    }

    #[test]
    fn slack_gets_text_and_blocks() {
        let body = slack_body(&json!({
            "summary": "retryd: job j1 (deploy on rpc) failed after 3 attempt(s): gave up",
            "job_id": "j1", "kind": "deploy", "target": "rpc", "attempt": 3, "max_attempts": 3,
            "class": "transient", "error": "HTTP 503",
        }));
        assert!(body["text"].as_str().unwrap().contains("failed after 3"));
        let details = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            details.contains("*attempt* 3/3") && details.contains("HTTP 503"),
            "{details}"
        );
    }
}

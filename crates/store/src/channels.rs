//! Notification sinks: where the deliveries of a job's changes go (SPEC §6). The instance's
//! come from the configuration file; an organization's admins manage its own channels
//! through the API. Both are written as a [`SinkSpec`], validated once here into a [`Sink`].

use crate::policies::Policies;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A delivery's time limit unless its sink sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a sink is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// A job failed for good (it is in the dead-letter queue).
    Failed,
    /// A job succeeded after at least one retry.
    Succeeded,
    /// An attempt failed and a retry is scheduled.
    Retrying,
}

impl On {
    pub const ALL: [On; 3] = [On::Failed, On::Succeeded, On::Retrying];

    pub fn as_str(self) -> &'static str {
        match self {
            On::Failed => "failed",
            On::Succeeded => "succeeded",
            On::Retrying => "retrying",
        }
    }

    pub fn parse(text: &str) -> Option<On> {
        On::ALL.into_iter().find(|on| on.as_str() == text)
    }
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// POST of the event as JSON; header values are treated as secrets in logs.
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
    },
    /// POST of `{"text", "blocks"}` as Slack's incoming webhooks take it.
    Slack { url: String },
    /// One plain-text e-mail per event over SMTP (no TLS: a local relay).
    Email {
        host: String,
        port: u16,
        from: String,
        to: Vec<String>,
    },
}

/// A configured notification sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub name: String,
    pub on: Vec<On>,
    /// The named policy deliveries are retried under.
    pub policy: String,
    pub timeout: Duration,
    pub destination: Destination,
}

/// The prefix of an organization channel's sink name (`@acme/ops`): no configured sink's name
/// can hold `@`, so the two never meet.
pub const CHANNEL_PREFIX: char = '@';

/// The sink name deliveries of organization `org`'s channel `name` carry.
pub fn channel_sink_name(org: &str, name: &str) -> String {
    format!("{CHANNEL_PREFIX}{org}/{name}")
}

/// The organization whose channel a sink name is (`None`: one of the instance's sinks).
pub fn channel_org(sink: &str) -> Option<&str> {
    sink.strip_prefix(CHANNEL_PREFIX)?
        .split_once('/')
        .map(|(org, _)| org)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Webhook,
    Slack,
    Email,
}

/// A sink as written: a `[[notifications]]` table of the configuration file, or the body of
/// `PUT /api/v1/channels/{name}` (whose path gives the name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub kind: SinkKind,
    /// webhook and slack: where to POST (a secret: never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// webhook: extra headers (values are secrets: never shown back or logged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Events: failed, succeeded (after retries), retrying [default: failed].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// Retry policy of the deliveries, a shared one [default: default].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// A delivery's time limit, e.g. 10s [default: 10s].
    #[serde(
        default,
        with = "retryd_core::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub timeout: Option<Duration>,
    /// email: the SMTP server as host:port (plain SMTP, a local relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
}

fn http_url(field: &str, url: Option<&str>) -> Result<String, String> {
    match url {
        Some(u) if (u.starts_with("http://") || u.starts_with("https://")) && u.len() > 8 => {
            Ok(u.to_owned())
        }
        Some(u) => Err(format!("{field}: {u:?} is not an http:// or https:// URL")),
        None => Err(format!(
            "{field}: required for this kind (an http:// or https:// URL)"
        )),
    }
}

impl SinkSpec {
    /// The sink this describes; an error names the field under `at` (`notifications[2]`,
    /// or empty for a request body) and the values allowed.
    pub fn to_sink(&self, at: &str, policies: &Policies) -> Result<Sink, String> {
        let field = |name: &str| {
            if at.is_empty() {
                name.to_owned()
            } else {
                format!("{at}.{name}")
            }
        };
        retryd_core::job::validate_name("name", &self.name)
            .map_err(|e| format!("{}: {e}", field("name")))?;
        let on = match &self.on {
            None => vec![On::Failed],
            Some(events) if events.is_empty() => {
                return Err(format!(
                    "{}: list at least one of failed, succeeded, retrying",
                    field("on")
                ));
            }
            Some(events) => events
                .iter()
                .map(|e| {
                    On::parse(e).ok_or_else(|| {
                        format!(
                            "{}: {e:?} is not one of failed, succeeded, retrying",
                            field("on")
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let policy = self.policy.clone().unwrap_or_else(|| "default".to_owned());
        if policies.get(&policy).is_none() {
            return Err(format!(
                "{}: no policy named {policy:?}; known: {}",
                field("policy"),
                policies.names().join(", ")
            ));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
            return Err(format!(
                "{}: must be between 100ms and 1m, got {}",
                field("timeout"),
                retryd_core::duration::format(timeout)
            ));
        }
        let only = |name: &str, set: bool| {
            if set {
                Err(format!("{}: not used by kind {:?}", field(name), self.kind))
            } else {
                Ok(())
            }
        };
        let destination =
            match self.kind {
                SinkKind::Webhook | SinkKind::Slack => {
                    only("smtp", self.smtp.is_some())?;
                    only("from", self.from.is_some())?;
                    only("to", !self.to.is_empty())?;
                    let url = http_url(&field("url"), self.url.as_deref())?;
                    if self.kind == SinkKind::Slack {
                        only("headers", !self.headers.is_empty())?;
                        Destination::Slack { url }
                    } else {
                        Destination::Webhook {
                            url,
                            headers: self.headers.clone(),
                        }
                    }
                }
                SinkKind::Email => {
                    only("url", self.url.is_some())?;
                    only("headers", !self.headers.is_empty())?;
                    let smtp = self.smtp.as_deref().ok_or_else(|| {
                        format!(
                            "{}: required for kind email (host:port of the SMTP server)",
                            field("smtp")
                        )
                    })?;
                    let (host, port) = smtp
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                        .filter(|(h, p)| !h.is_empty() && *p > 0)
                        .ok_or_else(|| {
                            format!(
                                "{}: {smtp:?} is not host:port, e.g. 127.0.0.1:25",
                                field("smtp")
                            )
                        })?;
                    let from = self.from.clone().filter(|f| f.contains('@')).ok_or_else(|| {
                    format!(
                        "{}: required for kind email, an address such as retryd@example.com",
                        field("from")
                    )
                })?;
                    if self.to.is_empty() {
                        return Err(format!("{}: list at least one address", field("to")));
                    }
                    if let Some(bad) = self.to.iter().find(|t| !t.contains('@')) {
                        return Err(format!("{}: {bad:?} is not an e-mail address", field("to")));
                    }
                    Destination::Email {
                        host: host.to_owned(),
                        port,
                        from,
                        to: self.to.clone(),
                    }
                }
            };
        Ok(Sink {
            name: self.name.clone(),
            on,
            policy,
            timeout,
            destination,
        })
    }
}

/// The sinks of organizations' channels, by organization, under their `@org/name` names.
/// A stored channel that no longer validates (a policy it names was removed from the
/// configuration) is left out, with the reason.
pub fn channel_sinks(
    channels: &[crate::StoredChannel],
    policies_of: &dyn Fn(&str) -> std::sync::Arc<Policies>,
) -> (BTreeMap<String, Vec<Sink>>, Vec<String>) {
    let mut by_org: BTreeMap<String, Vec<Sink>> = BTreeMap::new();
    let mut broken = Vec::new();
    for channel in channels {
        let spec = serde_json::from_value::<SinkSpec>(channel.config.clone())
            .map_err(|e| e.to_string())
            .and_then(|spec| {
                SinkSpec {
                    name: channel.name.clone(),
                    ..spec
                }
                .to_sink("", &policies_of(&channel.org))
            });
        match spec {
            Ok(mut sink) => {
                sink.name = channel_sink_name(&channel.org, &channel.name);
                by_org.entry(channel.org.clone()).or_default().push(sink);
            }
            Err(e) => broken.push(format!("channel {} of {}: {e}", channel.name, channel.org)),
        }
    }
    (by_org, broken)
}

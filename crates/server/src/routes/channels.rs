//! An organization's notification channels: its admins create, replace and delete them; its
//! members list them. Secrets (URLs, headers) are written and never shown back: a listing
//! names the kind, the host and the events only.

use crate::AppState;
use crate::auth::{Admin, Principal, Viewer};
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use retryd_store::StoredChannel;
use retryd_store::channels::{Destination, Sink, SinkKind, SinkSpec};
use serde::Serialize;

/// A channel as listed: never its secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub kind: SinkKind,
    /// The events it is told about: failed, succeeded, retrying.
    pub on: Vec<String>,
    /// The (shared or the organization's) policy its deliveries are retried under.
    pub policy: String,
    /// Where it delivers, without secrets: the URL's host, or the SMTP server.
    pub destination: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// The host (and port) of an http(s) URL, without user info, path or query: what may be
/// shown of a URL whose path or query can hold a secret (a Slack webhook's does).
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

fn view(stored: &StoredChannel, sink: &Sink) -> ChannelView {
    let (kind, destination) = match &sink.destination {
        Destination::Webhook { url, .. } => (SinkKind::Webhook, host(url)),
        Destination::Slack { url } => (SinkKind::Slack, host(url)),
        Destination::Email { host, port, to, .. } => (
            SinkKind::Email,
            format!("{host}:{port}, {} recipient(s)", to.len()),
        ),
    };
    ChannelView {
        name: stored.name.clone(),
        kind,
        on: sink.on.iter().map(|on| on.as_str().to_owned()).collect(),
        policy: sink.policy.clone(),
        destination,
        updated_at: stored.updated_at,
        updated_by: stored.updated_by.clone(),
    }
}

/// The stored channel's sink, validated as when it was written.
fn sink_of(state: &AppState, stored: &StoredChannel) -> Result<Sink, Error> {
    let spec: SinkSpec = serde_json::from_value(stored.config.clone())
        .map_err(|e| Error::Internal(format!("channel {} is unreadable: {e}", stored.name)))?;
    SinkSpec {
        name: stored.name.clone(),
        ..spec
    }
    .to_sink("", &state.control.policies(&stored.org))
    .map_err(|e| Error::Conflict(format!("channel {} no longer applies: {e}", stored.name)))
}

async fn of_org(state: &AppState, principal: &Principal) -> Result<Vec<StoredChannel>, Error> {
    let mut channels = state.control.store().list_channels().await?;
    channels.retain(|c| c.org == principal.org);
    Ok(channels)
}

#[utoipa::path(get, path = "/channels", tag = "notifications", responses((status = 200, description = "The organization's notification channels, without their secrets", body = Vec<ChannelView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<ChannelView>>, Error> {
    let mut views = Vec::new();
    for stored in of_org(&state, &principal).await? {
        if let Ok(sink) = sink_of(&state, &stored) {
            views.push(view(&stored, &sink));
        }
    }
    Ok(Json(views))
}

/// Creates or replaces a channel. The body is a sink as in the configuration file's
/// `[[notifications]]` (kind webhook, slack or email; url, headers, on, policy, timeout,
/// smtp, from, to); its name is the path's.
#[utoipa::path(put, path = "/channels/{name}", tag = "notifications", params(("name" = String, Path)), request_body = SinkSpec, responses((status = 200, body = ChannelView)))]
pub async fn put(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<SinkSpec>,
) -> Result<Json<ChannelView>, Error> {
    if !spec.name.is_empty() && spec.name != name {
        return Err(Error::invalid("name", "the path names the channel"));
    }
    let spec = SinkSpec { name, ..spec };
    let sink = spec
        .to_sink("", &state.control.policies(&admin.org))
        .map_err(|message| match message.split_once(": ") {
            Some((field, rest)) => Error::invalid(field, rest),
            None => Error::invalid("body", message),
        })?;
    let stored = StoredChannel {
        org: admin.org.clone(),
        name: spec.name.clone(),
        config: serde_json::to_value(SinkSpec {
            name: String::new(),
            ..spec
        })
        .map_err(|e| Error::Internal(e.to_string()))?,
        updated_at: state.control.now(),
        updated_by: admin.name.clone(),
    };
    state.control.store().put_channel(&stored).await?;
    state.control.policies_changed().await?;
    Ok(Json(view(&stored, &sink)))
}

#[utoipa::path(delete, path = "/channels/{name}", tag = "notifications", params(("name" = String, Path)), responses((status = 200, body = ChannelView)))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<ChannelView>, Error> {
    let stored = of_org(&state, &admin)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| Error::NotFound(format!("no channel named '{name}'")))?;
    let shown = sink_of(&state, &stored).map(|sink| view(&stored, &sink));
    state
        .control
        .store()
        .delete_channel(&admin.org, &name)
        .await?;
    state.control.policies_changed().await?;
    shown.map(Json)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_host_of_a_url_is_shown() {
        assert_eq!(
            super::host("https://user:pw@hooks.slack.com:443/services/T0/B0/secret?x=1"),
            "hooks.slack.com:443"
        );
        assert_eq!(super::host("http://127.0.0.1/hook"), "127.0.0.1");
    }
}

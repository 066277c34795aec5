//! Organizations: instance admins create them and set their limits; every caller
//! sees the organization it acts in (an instance token sees them all).

use crate::AppState;
use crate::auth::{Admin, Principal, Viewer};
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use retryd_core::org::{Org, validate_org};
use serde::Deserialize;

/// The most attempts an organization may be allowed to run at once.
const MAX_RUNNING: u32 = 100_000;

/// `POST /api/v1/orgs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrgRequest {
    /// Lowercase letters, digits and -, starting with a letter; at most 40.
    pub name: String,
    /// Attempts of its jobs running at once on all nodes; none: its fair share only.
    pub max_running: Option<u32>,
    /// Retries of its jobs that may start per minute on all nodes; none: no limit.
    pub retry_budget: Option<u32>,
}

/// `PUT /api/v1/orgs/{name}`: what an instance admin sets on an organization.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Attempts of its jobs running at once on all nodes; `null`: its fair share only.
    pub max_running: Option<u32>,
    /// Retries of its jobs that may start per minute on all nodes; `null`: no limit.
    pub retry_budget: Option<u32>,
}

/// The most retries per minute an organization's budget may allow.
const MAX_RETRY_BUDGET: u32 = 1_000_000;

fn check_limits(max_running: Option<u32>, retry_budget: Option<u32>) -> Result<(), Error> {
    for (field, value, max) in [
        ("max_running", max_running, MAX_RUNNING),
        ("retry_budget", retry_budget, MAX_RETRY_BUDGET),
    ] {
        if let Some(n) = value.filter(|n| !(1..=max).contains(n)) {
            return Err(Error::invalid(
                field,
                format!("must be between 1 and {max}, or null for no limit; got {n}"),
            ));
        }
    }
    Ok(())
}

/// The organization of that name, if the caller may see it (404 otherwise, as for one that
/// does not exist).
async fn visible(state: &AppState, principal: &Principal, name: &str) -> Result<Org, Error> {
    let missing = || Error::NotFound(format!("organization '{name}' not found"));
    if !principal.instance && name != principal.org {
        return Err(missing());
    }
    state
        .control
        .store()
        .list_orgs()
        .await?
        .into_iter()
        .find(|o| o.name == name)
        .ok_or_else(missing)
}

#[utoipa::path(get, path = "/orgs", tag = "organizations", responses((status = 200, description = "Every organization for an instance token; the caller's own otherwise", body = Vec<Org>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<Org>>, Error> {
    let mut orgs = state.control.store().list_orgs().await?;
    if !principal.instance {
        orgs.retain(|o| o.name == principal.org);
    }
    Ok(Json(orgs))
}

#[utoipa::path(post, path = "/orgs", tag = "organizations", request_body = NewOrgRequest, responses((status = 201, body = Org)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(request): ApiJson<NewOrgRequest>,
) -> Result<(StatusCode, Json<Org>), Error> {
    admin.instance_only()?;
    validate_org("name", &request.name).map_err(|m| Error::invalid("name", m))?;
    check_limits(request.max_running, request.retry_budget)?;
    let org = Org {
        name: request.name,
        default_policy: None,
        max_running: request.max_running,
        retry_budget: request.retry_budget,
        created_at: state.control.now(),
        created_by: admin.name.clone(),
    };
    state.control.store().insert_org(&org).await?;
    // Its policy book (the shared policies, for now) exists on this node at once.
    state.control.policies_changed().await?;
    Ok((StatusCode::CREATED, Json(org)))
}

#[utoipa::path(get, path = "/orgs/{name}", tag = "organizations", params(("name" = String, Path)), responses((status = 200, body = Org)))]
pub async fn show(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(name): Path<String>,
) -> Result<Json<Org>, Error> {
    Ok(Json(visible(&state, &principal, &name).await?))
}

#[utoipa::path(put, path = "/orgs/{name}", tag = "organizations", params(("name" = String, Path)), request_body = OrgSettings, responses((status = 200, body = Org)))]
pub async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(settings): ApiJson<OrgSettings>,
) -> Result<Json<Org>, Error> {
    let mut org = visible(&state, &admin, &name).await?;
    admin.instance_only()?;
    check_limits(settings.max_running, settings.retry_budget)?;
    org.max_running = settings.max_running;
    org.retry_budget = settings.retry_budget;
    state.control.store().update_org(&org).await?;
    state.control.policies_changed().await?;
    Ok(Json(org))
}

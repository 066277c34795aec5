//! Organizations: instance admins create them and set their running limit; every caller
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
}

/// `PUT /api/v1/orgs/{name}`: what an instance admin sets on an organization.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Attempts of its jobs running at once on all nodes; `null`: its fair share only.
    pub max_running: Option<u32>,
}

fn check_limit(max_running: Option<u32>) -> Result<(), Error> {
    match max_running {
        Some(n) if !(1..=MAX_RUNNING).contains(&n) => Err(Error::invalid(
            "max_running",
            format!("must be between 1 and {MAX_RUNNING}, or null for no limit; got {n}"),
        )),
        _ => Ok(()),
    }
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
    check_limit(request.max_running)?;
    let org = Org {
        name: request.name,
        default_policy: None,
        max_running: request.max_running,
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
    check_limit(settings.max_running)?;
    org.max_running = settings.max_running;
    state.control.store().update_org(&org).await?;
    state.control.policies_changed().await?;
    Ok(Json(org))
}

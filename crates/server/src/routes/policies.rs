//! Named retry policies of the caller's organization: the built-in and configured ones
//! (shared, read-only) and its own. Everyone reads them with their schedule preview; the
//! organization's admins create, update and deactivate its own and choose its active
//! default. A change applies to attempts scheduled after it, on every node.

use crate::AppState;
use crate::auth::{Admin, Principal, Viewer};
use crate::dto::{ActivePolicyRequest, NewPolicyRequest, PolicyView};
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use retryd_core::Policy;
use retryd_store::Policies;
use retryd_store::StoredPolicy;
use retryd_store::policies::{INLINE, Source};

fn policy_view(policies: &Policies, name: &str) -> Option<PolicyView> {
    let (policy, active) = policies.definition(name)?;
    Some(PolicyView {
        name: name.to_owned(),
        source: policies.source(name).unwrap_or(Source::Api),
        active,
        default: policies.org_default() == Some(name),
        policy: policy.clone(),
        schedule: policy.simulate(),
    })
}

fn unknown(policies: &Policies, name: &str) -> Error {
    Error::NotFound(format!(
        "no policy named '{name}' (known: {})",
        policies.names().join(", ")
    ))
}

#[utoipa::path(get, path = "/policies", tag = "policies", responses((status = 200, body = Vec<PolicyView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Json<Vec<PolicyView>> {
    let policies = state.control.policies(&principal.org);
    Json(
        policies
            .iter()
            .filter_map(|(name, _, _)| policy_view(&policies, name))
            .collect(),
    )
}

#[utoipa::path(get, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)), responses((status = 200, body = PolicyView)))]
pub async fn show(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(name): Path<String>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&principal.org);
    policy_view(&policies, &name)
        .map(Json)
        .ok_or_else(|| unknown(&policies, &name))
}

fn validate(name: &str, policy: &Policy) -> Result<(), Error> {
    retryd_core::job::validate_name("name", name).map_err(|m| Error::invalid("name", m))?;
    if name == INLINE {
        return Err(Error::invalid(
            "name",
            "'inline' is reserved for per-job policies",
        ));
    }
    policy
        .validate()
        .map_err(|e| Error::invalid(format!("policy.{}", e.field), e.message))
}

/// Refuses to manage a policy that the configuration file or the binary defines.
fn managed_only(policies: &Policies, name: &str) -> Result<(), Error> {
    match policies.source(name) {
        Some(Source::Builtin) => Err(Error::Conflict(format!(
            "'{name}' is a built-in policy; create a new one with another name"
        ))),
        Some(Source::Config) => Err(Error::Conflict(format!(
            "'{name}' is defined in the configuration file; change it there"
        ))),
        _ => Ok(()),
    }
}

async fn save(
    state: &AppState,
    admin: &Principal,
    name: &str,
    policy: Policy,
    active: bool,
) -> Result<PolicyView, Error> {
    state
        .control
        .store()
        .put_policy(&StoredPolicy {
            org: admin.org.clone(),
            name: name.to_owned(),
            policy,
            active,
            updated_at: state.control.now(),
            updated_by: admin.name.clone(),
        })
        .await?;
    state.control.policies_changed().await?;
    policy_view(&state.control.policies(&admin.org), name)
        .ok_or_else(|| Error::Internal(format!("policy {name} vanished after saving")))
}

/// Creates a policy (or re-activates a deactivated one with a new definition).
#[utoipa::path(post, path = "/policies", tag = "policies", request_body = NewPolicyRequest, responses((status = 201, body = PolicyView)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(request): ApiJson<NewPolicyRequest>,
) -> Result<(StatusCode, Json<PolicyView>), Error> {
    validate(&request.name, &request.policy)?;
    let policies = state.control.policies(&admin.org);
    managed_only(&policies, &request.name)?;
    if policies.get(&request.name).is_some() {
        return Err(Error::Conflict(format!(
            "a policy named '{}' exists; change it with PUT /api/v1/policies/{}",
            request.name, request.name
        )));
    }
    let view = save(&state, &admin, &request.name, request.policy, true).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(put, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)), request_body = Policy, responses((status = 200, body = PolicyView)))]
pub async fn update(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&admin.org);
    let Some((_, active)) = policies.definition(&name) else {
        return Err(unknown(&policies, &name));
    };
    managed_only(&policies, &name)?;
    validate(&name, &policy)?;
    Ok(Json(save(&state, &admin, &name, policy, active).await?))
}

/// Changes only the fields given (a JSON merge of one level): `{"max_delay": "10m"}` keeps
/// every other field as it was, where PUT replaces the whole policy.
#[utoipa::path(patch, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)), request_body(content = Object, description = "Policy fields to change, e.g. {\"max_delay\": \"10m\"}; null clears an optional field"), responses((status = 200, body = PolicyView)))]
pub async fn patch(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(changes): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&admin.org);
    let Some((current, active)) = policies.definition(&name) else {
        return Err(unknown(&policies, &name));
    };
    managed_only(&policies, &name)?;
    let mut merged = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return Err(Error::Internal(format!("policy {name} is not an object"))),
    };
    merged.extend(changes);
    let policy: Policy = serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| Error::invalid("policy", e.to_string()))?;
    validate(&name, &policy)?;
    Ok(Json(save(&state, &admin, &name, policy, active).await?))
}

/// Deactivates: jobs that use the policy keep it; new jobs cannot choose it.
#[utoipa::path(delete, path = "/policies/{name}", tag = "policies", params(("name" = String, Path)), responses((status = 200, body = PolicyView)))]
pub async fn deactivate(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&admin.org);
    let Some((policy, _)) = policies.definition(&name) else {
        return Err(unknown(&policies, &name));
    };
    // Kinds and the priority rule can only name built-in or configured policies, so no
    // configuration depends on a managed one.
    managed_only(&policies, &name)?;
    let policy = policy.clone();
    Ok(Json(save(&state, &admin, &name, policy, false).await?))
}

/// The policy the organization's jobs get when they name none (at a priority the instance's
/// priority rule leaves alone, and of a kind it maps to no policy): its active default,
/// else `default`.
#[utoipa::path(get, path = "/policies/active", tag = "policies", responses((status = 200, body = PolicyView)))]
pub async fn active(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&principal.org);
    let name = policies.org_default().unwrap_or("default").to_owned();
    policy_view(&policies, &name)
        .map(Json)
        .ok_or_else(|| unknown(&policies, &name))
}

/// Chooses the organization's active default policy (admins of the organization).
#[utoipa::path(put, path = "/policies/active", tag = "policies", request_body = ActivePolicyRequest, responses((status = 200, body = PolicyView)))]
pub async fn set_active(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(request): ApiJson<ActivePolicyRequest>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.control.policies(&admin.org);
    if let Some(name) = &request.name
        && policies.get(name).is_none()
    {
        return Err(Error::invalid(
            "name",
            format!(
                "unknown or deactivated policy '{name}' (active: {})",
                policies.names().join(", ")
            ),
        ));
    }
    let store = state.control.store();
    let mut org = store
        .list_orgs()
        .await?
        .into_iter()
        .find(|o| o.name == admin.org)
        .ok_or_else(|| Error::NotFound(format!("organization '{}' not found", admin.org)))?;
    org.default_policy = request.name;
    store.update_org(&org).await?;
    state.control.policies_changed().await?;
    active(State(state), Viewer(admin)).await
}

/// The schedule a policy would give, without saving it: the wait ranges and cumulative time
/// before each attempt (what the dashboard's editor draws as it is typed).
#[utoipa::path(post, path = "/policies/simulate", tag = "policies", request_body = Policy, responses((status = 200, body = Vec<retryd_core::policy::ScheduleRow>)))]
pub async fn simulate(
    Viewer(_): Viewer,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Vec<retryd_core::policy::ScheduleRow>>, Error> {
    policy
        .validate()
        .map_err(|e| Error::invalid(format!("policy.{}", e.field), e.message))?;
    Ok(Json(policy.simulate()))
}

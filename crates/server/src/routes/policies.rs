use crate::AppState;
use crate::dto::PolicyView;
use crate::error::Error;
use axum::Json;
use axum::extract::{Path, State};
use retryd_core::Policy;
use retryd_core::policy::BUILTIN_NAMES;

fn policy_view(name: &str, policy: &Policy) -> PolicyView {
    PolicyView {
        name: name.to_owned(),
        builtin: BUILTIN_NAMES.contains(&name),
        policy: policy.clone(),
        schedule: policy.simulate(),
    }
}

pub async fn list(State(state): State<AppState>) -> Json<Vec<PolicyView>> {
    Json(
        state
            .engine
            .policies()
            .iter()
            .map(|(name, policy)| policy_view(name, policy))
            .collect(),
    )
}

pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PolicyView>, Error> {
    let policies = state.engine.policies();
    policies
        .get(&name)
        .map(|policy| Json(policy_view(&name, policy)))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no policy named '{name}' (known: {})",
                policies.names().join(", ")
            ))
        })
}

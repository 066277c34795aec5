//! API tokens: an organization's admins create, list and revoke its tokens; instance admins
//! also create instance tokens and tokens of any organization. The plain text is shown once,
//! at creation.

use crate::AppState;
use crate::auth::{self, Admin};
use crate::dto::{CreatedToken, NewTokenRequest, TokenView};
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

#[utoipa::path(get, path = "/tokens", tag = "auth", responses((status = 200, body = Vec<TokenView>)))]
pub async fn list(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Json<Vec<TokenView>>, Error> {
    let tokens = state.control.store().list_tokens().await?;
    Ok(Json(
        tokens
            .into_iter()
            .filter(|t| t.org == admin.org)
            .map(TokenView::from)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/tokens", tag = "auth", request_body = NewTokenRequest, responses((status = 201, body = CreatedToken)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(request): ApiJson<NewTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), Error> {
    request.validate()?;
    let org = request.org.unwrap_or_else(|| admin.org.clone());
    if org != admin.org || request.instance {
        admin.instance_only()?;
    }
    let orgs = state.control.store().list_orgs().await?;
    if !orgs.iter().any(|o| o.name == org) {
        return Err(Error::NotFound(format!("organization '{org}' not found")));
    }
    let grant = auth::Grant {
        role: request.role,
        org,
        instance: request.instance,
    };
    let minted = auth::mint(&request.name, grant, &admin.name, state.control.now());
    state.control.store().insert_token(&minted.record).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: minted.plaintext,
            info: minted.record.into(),
        }),
    ))
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "auth", params(("id" = String, Path, description = "Token id or name")), responses((status = 200, body = TokenView)))]
pub async fn revoke(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id_or_name): Path<String>,
) -> Result<Json<TokenView>, Error> {
    state
        .control
        .store()
        .revoke_token(&admin.org, &id_or_name, state.control.now())
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| Error::NotFound(format!("no token with id or name '{id_or_name}'")))
}

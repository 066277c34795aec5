//! The dashboard's login: a token is exchanged for an HttpOnly session cookie, and the
//! session's CSRF token is handed to the page's script.

use crate::AppState;
use crate::auth::{self, Principal, SESSION_COOKIE, Viewer};
use crate::dto::{Login, SessionView};
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse};

fn view(state: &AppState, principal: &Principal) -> SessionView {
    SessionView {
        role: principal.role,
        name: principal.name.clone(),
        org: principal.org.clone(),
        instance: principal.instance,
        csrf_token: principal
            .session
            .as_deref()
            .map(auth::csrf_token)
            .unwrap_or_default(),
        auth: state.auth.config.enabled,
    }
}

#[utoipa::path(post, path = "/session", tag = "auth", request_body = Login, security(()), responses((status = 200, description = "Logged in; sets the HttpOnly session cookie", body = SessionView)))]
pub async fn login(
    State(state): State<AppState>,
    axum::Extension(auth::ClientAddress(address)): axum::Extension<auth::ClientAddress>,
    ApiJson(login): ApiJson<Login>,
) -> Result<impl IntoResponse, Error> {
    if !state.auth.config.enabled {
        return Err(Error::Conflict(
            "authentication is disabled on this server: there is nothing to log in to".into(),
        ));
    }
    state.auth.failures.check(address)?;
    let Some(record) = auth::verify(state.control.store().as_ref(), &login.token).await? else {
        state.auth.failures.record(address);
        return Err(Error::Unauthenticated(
            "the token is unknown, malformed or revoked".into(),
        ));
    };
    let principal = Principal {
        role: record.role,
        org: record.org,
        instance: record.instance,
        name: record.name,
        session: Some(login.token.clone()),
    };
    let secure = if state.auth.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}",
        login.token
    );
    Ok((
        AppendHeaders([(SET_COOKIE, cookie)]),
        Json(view(&state, &principal)),
    ))
}

#[utoipa::path(get, path = "/session", tag = "auth", responses((status = 200, body = SessionView)))]
pub async fn show(State(state): State<AppState>, Viewer(principal): Viewer) -> Json<SessionView> {
    Json(view(&state, &principal))
}

#[utoipa::path(delete, path = "/session", tag = "auth", responses((status = 204, description = "Logged out; clears the cookie")))]
pub async fn logout(Viewer(_): Viewer) -> impl IntoResponse {
    (
        AppendHeaders([(
            SET_COOKIE,
            format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )]),
        axum::http::StatusCode::NO_CONTENT,
    )
}

//! Who is calling, and whether they may: bearer API tokens (stored as SHA-256, compared in
//! constant time), the dashboard's session cookie with its CSRF token, per-token rate
//! limiting, and the extractors [`Viewer`], [`Operator`] and [`Admin`] that each handler
//! names to require its role.
//!
//! A token reads `rtd_<id>_<secret>`: the id finds the row, the secret is only ever hashed.
//! The session cookie carries the token itself (HttpOnly, SameSite=Strict); its CSRF token
//! is derived from the secret, so no session table is needed and every node agrees, and
//! revoking the token ends its sessions.
//!
//! Every request acts in one organization ([`Principal::org`]): the token's own, or for an
//! instance token the one named by the `X-Retryd-Org` header (the CLI's `--org`) or the
//! `retryd_org` cookie (the dashboard's switcher). A header naming an organization the token
//! cannot act in is answered 404, as an unknown one is, so that names do not leak; the cookie
//! is only a preference, and one that does not apply is passed over.

use crate::AppState;
use crate::error::Error;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use retryd_core::Role;
use retryd_store::{AccessStore, TokenRecord};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

pub const TOKEN_PREFIX: &str = "rtd_";
pub const SESSION_COOKIE: &str = "retryd_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const ORG_HEADER: &str = "x-retryd-org";
pub const ORG_COOKIE: &str = "retryd_org";

/// How the API authenticates, from the `[auth]` settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Off only on loopback addresses (the server refuses otherwise): every caller is admin.
    pub enabled: bool,
    /// Sustained requests per second per token.
    pub rate_per_second: NonZeroU32,
    /// Requests a token may send at once above the sustained rate.
    pub burst: NonZeroU32,
    /// Host names, besides IP addresses and localhost, the server answers to (see
    /// [`crate::cross_site`]).
    pub allowed_hosts: Vec<String>,
    /// The session cookie is `Secure` (served over TLS).
    pub secure_cookies: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            rate_per_second: NonZeroU32::new(100).expect("non-zero"),
            burst: NonZeroU32::new(500).expect("non-zero"),
            allowed_hosts: Vec::new(),
            secure_cookies: false,
        }
    }
}

/// Failed authentications (unknown, malformed or revoked tokens) a client address may make
/// per [`FAILED_AUTH_WINDOW`] before it is answered 429 without its token being looked at.
pub const FAILED_AUTH_LIMIT: u32 = 100;
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it, expired windows are forgotten first.
const FAILED_AUTH_ADDRESSES: usize = 10_000;

/// The address a request came from (unspecified when served without connection info).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// Failed authentications per client address, in fixed windows.
#[derive(Debug, Default)]
pub struct FailedAuth {
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuth {
    /// `Err(seconds to wait)` when the address used up its failures.
    pub fn check(&self, address: IpAddr) -> Result<(), Error> {
        let map = self.by_address.lock().expect("failed-auth map");
        match map.get(&address) {
            Some((start, count)) if *count >= FAILED_AUTH_LIMIT => {
                let left = FAILED_AUTH_WINDOW.saturating_sub(start.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(Error::RateLimited {
                        retry_after_secs: left.as_secs().max(1),
                    })
                }
            }
            _ => Ok(()),
        }
    }

    pub fn record(&self, address: IpAddr) {
        let mut map = self.by_address.lock().expect("failed-auth map");
        if map.len() >= FAILED_AUTH_ADDRESSES {
            map.retain(|_, (start, _)| start.elapsed() < FAILED_AUTH_WINDOW);
        }
        let entry = map.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILED_AUTH_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The authentication state shared by handlers.
#[derive(Debug)]
pub struct Auth {
    pub config: AuthConfig,
    limiter: DefaultKeyedRateLimiter<String>,
    pub failures: FailedAuth,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Arc<Self> {
        let quota = Quota::per_second(config.rate_per_second).allow_burst(config.burst);
        Arc::new(Auth {
            config,
            limiter: RateLimiter::keyed(quota),
            failures: FailedAuth::default(),
        })
    }
}

/// A freshly minted token: the only moment its plain text exists.
#[derive(Debug)]
pub struct MintedToken {
    pub plaintext: String,
    pub record: TokenRecord,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// What a new token may do: its role in its organization, and whether it is an instance
/// token (any organization, and organizations themselves).
#[derive(Debug, Clone)]
pub struct Grant {
    pub role: Role,
    pub org: String,
    pub instance: bool,
}

/// Makes a new token with 256 random bits of secret.
pub fn mint(name: &str, grant: Grant, actor: &str, now: DateTime<Utc>) -> MintedToken {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex(&id), hex(&secret));
    MintedToken {
        plaintext: format!("{TOKEN_PREFIX}{id}_{secret}"),
        record: TokenRecord {
            secret_hash: sha256_hex(&[secret.as_bytes()]),
            id,
            org: grant.org,
            instance: grant.instance,
            name: name.to_owned(),
            role: grant.role,
            created_at: now,
            created_by: actor.to_owned(),
            revoked_at: None,
        },
    }
}

fn split(token: &str) -> Option<(&str, &str)> {
    token.strip_prefix(TOKEN_PREFIX)?.split_once('_')
}

/// The token's record when it is known, not revoked and its secret matches.
pub async fn verify(store: &dyn AccessStore, token: &str) -> Result<Option<TokenRecord>, Error> {
    let Some((id, secret)) = split(token) else {
        return Ok(None);
    };
    let Some(record) = store.get_token(id).await? else {
        return Ok(None);
    };
    let presented = sha256_hex(&[secret.as_bytes()]);
    let matches: bool = presented
        .as_bytes()
        .ct_eq(record.secret_hash.as_bytes())
        .into();
    Ok((matches && record.revoked_at.is_none()).then_some(record))
}

/// The CSRF token of a session: only someone who can read the (HttpOnly) cookie's token, that
/// is the server, can compute it.
pub fn csrf_token(token: &str) -> String {
    sha256_hex(&[b"retryd csrf\0", token.as_bytes()])
}

/// Who made a request, and in which organization it acts.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    /// The organization the request acts in: everything it reads and changes is its.
    pub org: String,
    /// An instance token: may act in any organization and manage organizations.
    pub instance: bool,
    /// Recorded as the actor of the changes the request makes.
    pub name: String,
    /// The dashboard session's token, when the request came with the cookie.
    pub session: Option<String>,
}

/// What the middleware found; the role extractors turn it into a response.
#[derive(Debug, Clone)]
enum Authn {
    None,
    Invalid,
    CsrfMissing,
    /// The request named an organization the token cannot act in (or that does not exist).
    UnknownOrg(String),
    Known(Principal),
}

/// An organization a request names.
struct Requested {
    org: String,
    /// Named by the header: refused when it does not apply. The cookie is a preference.
    strict: bool,
}

/// The organization a request names, if any: the header, else the dashboard's cookie.
fn requested_org(headers: &HeaderMap) -> Option<Requested> {
    let named = |org: &str, strict| {
        let org = org.trim();
        (!org.is_empty()).then(|| Requested {
            org: org.to_owned(),
            strict,
        })
    };
    if let Some(header) = headers.get(ORG_HEADER) {
        return named(header.to_str().unwrap_or("?"), true);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(ORG_COOKIE)?.strip_prefix('='))
        .and_then(|org| named(org, false))
}

/// Where a caller acts: its token's organization unless it names another, which only an
/// instance token may, and only one that exists.
async fn resolve_org(
    state: &AppState,
    principal: Principal,
    requested: Option<Requested>,
) -> Result<Authn, Error> {
    let Some(requested) = requested.filter(|r| r.org != principal.org) else {
        return Ok(Authn::Known(principal));
    };
    let exists = principal.instance
        && retryd_core::org::validate_org("org", &requested.org).is_ok()
        && state
            .control
            .store()
            .list_orgs()
            .await?
            .iter()
            .any(|o| o.name == requested.org);
    Ok(match (exists, requested.strict) {
        (true, _) => Authn::Known(Principal {
            org: requested.org,
            ..principal
        }),
        (false, true) => Authn::UnknownOrg(requested.org),
        (false, false) => Authn::Known(principal),
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Resolves the caller once per request and applies the rate limit; handlers then require
/// a role with an extractor.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    let address = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    request.extensions_mut().insert(ClientAddress(address));
    let authn = if !auth.config.enabled {
        Authn::Known(Principal {
            role: Role::Admin,
            org: retryd_core::org::default_org(),
            instance: true,
            name: "local".into(),
            session: None,
        })
    } else {
        let headers = request.headers();
        let (token, from_cookie) = match (bearer(headers), session_cookie(headers)) {
            (Some(token), _) => (Some(token.to_owned()), false),
            (None, Some(token)) => (Some(token.to_owned()), true),
            (None, None) => (None, false),
        };
        match token {
            None => Authn::None,
            // An address that keeps guessing is not heard until its window ends.
            Some(_) if let Err(limited) = auth.failures.check(address) => {
                return limited.into_response();
            }
            Some(token) => match verify(state.control.store().as_ref(), &token).await {
                Err(e) => return e.into_response(),
                Ok(None) => {
                    auth.failures.record(address);
                    Authn::Invalid
                }
                Ok(Some(record)) => {
                    if let Err(not_until) = auth.limiter.check_key(&record.id) {
                        let wait = not_until.wait_time_from(governor::clock::Clock::now(
                            &governor::clock::DefaultClock::default(),
                        ));
                        let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        return Error::RateLimited {
                            retry_after_secs: retry_after_secs.max(1),
                        }
                        .into_response();
                    }
                    let csrf_ok = !from_cookie
                        || is_safe(request.method())
                        || request
                            .headers()
                            .get(CSRF_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|sent| {
                                sent.as_bytes().ct_eq(csrf_token(&token).as_bytes()).into()
                            });
                    if csrf_ok {
                        Authn::Known(Principal {
                            role: record.role,
                            org: record.org,
                            instance: record.instance,
                            name: record.name,
                            session: from_cookie.then_some(token),
                        })
                    } else {
                        Authn::CsrfMissing
                    }
                }
            },
        }
    };
    let authn = match authn {
        Authn::Known(principal) => {
            match resolve_org(&state, principal, requested_org(request.headers())).await {
                Ok(authn) => authn,
                Err(e) => return e.into_response(),
            }
        }
        other => other,
    };
    request.extensions_mut().insert(authn);
    next.run(request).await
}

fn require(parts: &Parts, needed: Role) -> Result<Principal, Error> {
    match parts.extensions.get::<Authn>() {
        Some(Authn::Known(principal)) if principal.role >= needed => Ok(principal.clone()),
        Some(Authn::Known(principal)) => Err(Error::Forbidden {
            needed,
            has: principal.role,
        }),
        Some(Authn::CsrfMissing) => Err(Error::Csrf),
        Some(Authn::UnknownOrg(org)) => Err(Error::NotFound(format!(
            "organization '{org}' not found"
        ))),
        Some(Authn::Invalid) => Err(Error::Unauthenticated(
            "the token is unknown, malformed or revoked".into(),
        )),
        Some(Authn::None) | None => Err(Error::Unauthenticated(
            "send an API token as `Authorization: Bearer rtd_…` (create one with `retryd token create`)".into(),
        )),
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Error;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
                require(parts, $role).map($name)
            }
        }
    };
}

role_extractor!(
    Viewer,
    Role::Viewer,
    "Requires at least the viewer role (reads)."
);
role_extractor!(
    Operator,
    Role::Operator,
    "Requires at least the operator role (changes jobs and queues)."
);
role_extractor!(
    Admin,
    Role::Admin,
    "Requires the admin role (policies, tokens, purge)."
);

impl Principal {
    /// Refuses unless the caller holds an instance token (organizations, metrics).
    pub fn instance_only(&self) -> Result<(), Error> {
        if self.instance {
            Ok(())
        } else {
            Err(Error::InstanceOnly {
                org: self.org.clone(),
            })
        }
    }

    /// Answers 404 for a thing of another organization, as for one that does not exist:
    /// `what` names it ("job 0193…").
    pub fn owns(&self, org: &str, what: impl std::fmt::Display) -> Result<(), Error> {
        if org == self.org {
            Ok(())
        } else {
            Err(Error::NotFound(format!("{what} not found")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_split_and_hash_their_secret_only() {
        let grant = Grant {
            role: Role::Operator,
            org: "acme".into(),
            instance: false,
        };
        let minted = mint("ci", grant.clone(), "test", Utc::now());
        assert_eq!(minted.record.org, "acme");
        let (id, secret) = split(&minted.plaintext).expect("well-formed");
        assert_eq!(id, minted.record.id);
        assert_eq!(secret.len(), 64);
        assert!(!minted.record.secret_hash.contains(secret));
        assert_eq!(minted.record.secret_hash, sha256_hex(&[secret.as_bytes()]));
        assert_ne!(
            mint("ci", grant, "test", Utc::now()).plaintext,
            minted.plaintext
        );
    }

    #[test]
    fn cookies_and_bearer_headers_are_found() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; retryd_session=rtd_x_y; b=2".parse().unwrap(),
        );
        headers.insert(header::AUTHORIZATION, "bearer  rtd_a_b".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("rtd_x_y"));
        assert_eq!(bearer(&headers), Some("rtd_a_b"));
        assert_ne!(csrf_token("rtd_x_y"), csrf_token("rtd_x_z"));
    }
}

//! Cross-site request refusal, with authentication on or off: a page on another site must
//! not change anything here, nor read the live events, nor reach the API through a DNS name
//! it controls (DNS rebinding).
//!
//! - `Host` must be an IP address, `localhost` (or `*.localhost`), or a name in
//!   `server.allowed_hosts`: a rebinding attack's requests carry the attacker's name.
//! - A state change (`POST`, `PUT`, `PATCH`, `DELETE`) and a WebSocket upgrade with an
//!   `Origin` must come from this same origin (or an allowed host): browsers always send it.
//! - A `POST`, `PUT` or `PATCH` that carries ambient authority (authentication off, or the
//!   session cookie) must say `Content-Type: application/json` or carry a header no
//!   cross-site form or simple request can set (`X-CSRF-Token`, `Authorization`): HTML forms
//!   and `no-cors` fetches can only send form, multipart or plain-text bodies. Without
//!   either, a request is just unauthenticated, and authentication answers it.

use crate::error::Error;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The names, besides IP addresses and localhost, the server answers to.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<String>);

/// What the guard needs to know.
#[derive(Debug, Clone, Default)]
pub struct CrossSite {
    pub allowed: AllowedHosts,
    /// Authentication is on: a request with neither cookie nor token has no authority.
    pub auth_enabled: bool,
}

impl AllowedHosts {
    /// Entries are host names (`retryd.example.com`) or `*.domain` wildcards, any case.
    pub fn new(hosts: &[String]) -> Self {
        AllowedHosts(
            hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether a `Host` (or an origin's host), port stripped, is one the server answers to.
    fn admits(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.listed(&host)
    }

    fn listed(&self, host: &str) -> bool {
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => entry == host,
        })
    }
}

/// `host[:port]` into the host and the port, if given; IPv6 literals keep their brackets.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    }
}

fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

/// Whether `origin` (`scheme://host[:port]`) is the origin of a request to `host`.
fn same_origin(origin: &str, host: &str, allowed: &AllowedHosts) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null": a sandboxed frame, a file, a redirect across sites
    };
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let (origin_host, origin_port) = split_authority(authority);
    let (host_host, host_port) = split_authority(host);
    let same = origin_host.eq_ignore_ascii_case(host_host)
        && origin_port.unwrap_or(default_port) == host_port.unwrap_or(default_port);
    // Behind a reverse proxy the Host may be the upstream's address: the public name, when
    // listed, is trusted as an origin.
    same || allowed.listed(&origin_host.to_ascii_lowercase())
}

/// Refuses what a page on another site could send; see the module docs.
pub async fn refuse_cross_site(
    State(guard): State<Arc<CrossSite>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&guard, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check(guard: &CrossSite, method: &Method, headers: &HeaderMap) -> Result<(), Error> {
    let allowed = &guard.allowed;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST.as_str());
    if let Some(host) = host
        && !allowed.admits(split_authority(host).0)
    {
        return Err(Error::CrossSite(format!(
            "Host {host:?} is not one this server answers to: use its IP address or localhost, \
             or add the name to server.allowed_hosts"
        )));
    }
    if !is_change(method) && !is_websocket(headers) {
        return Ok(());
    }
    if let Some(origin) = text(header::ORIGIN.as_str())
        && !same_origin(origin, host.unwrap_or_default(), allowed)
    {
        return Err(Error::CrossSite(format!(
            "Origin {origin:?} is not this server's: changes and the WebSocket are same-origin only"
        )));
    }
    let needs_body_type = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let ambient = !guard.auth_enabled || crate::auth::session_cookie(headers).is_some();
    let unforgeable =
        text(crate::auth::CSRF_HEADER).is_some() || text(header::AUTHORIZATION.as_str()).is_some();
    if needs_body_type && ambient && !is_json(headers) && !unforgeable {
        return Err(Error::UnsupportedMediaType(
            "a change must be sent with Content-Type: application/json".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        let allowed = AllowedHosts::new(&["retryd.example.com".into(), "*.corp.example".into()]);
        for host in [
            "127.0.0.1",
            "[::1]",
            "10.0.0.5",
            "localhost",
            "app.localhost",
            "RETRYD.example.com",
            "ci.corp.example",
        ] {
            assert!(allowed.admits(host), "{host}");
        }
        for host in ["evil.example", "localhost.evil.example", "corp.example"] {
            assert!(!allowed.admits(host), "{host}");
        }
    }

    #[test]
    fn origins_must_match_the_host_port_and_all() {
        let allowed = AllowedHosts::default();
        assert!(same_origin(
            "http://127.0.0.1:7878",
            "127.0.0.1:7878",
            &allowed
        ));
        assert!(same_origin("http://localhost", "localhost:80", &allowed));
        assert!(same_origin("http://[::1]:7878", "[::1]:7878", &allowed));
        assert!(!same_origin(
            "http://127.0.0.1:9999",
            "127.0.0.1:7878",
            &allowed
        ));
        assert!(!same_origin("null", "127.0.0.1:7878", &allowed));
        assert!(!same_origin(
            "https://127.0.0.1:7878",
            "127.0.0.1",
            &allowed
        ));
    }

    #[test]
    fn a_plain_text_post_is_refused_unless_it_carries_an_unforgeable_header() {
        let allowed = CrossSite::default();
        let post = Method::POST;
        let host = ("host", "127.0.0.1:7878");
        assert!(
            check(
                &allowed,
                &post,
                &headers(&[host, ("content-type", "text/plain")])
            )
            .is_err()
        );
        assert!(check(&allowed, &post, &headers(&[host])).is_err());
        assert!(
            check(
                &allowed,
                &post,
                &headers(&[host, ("content-type", "application/json; charset=utf-8")])
            )
            .is_ok()
        );
        assert!(check(&allowed, &post, &headers(&[host, ("x-csrf-token", "t")])).is_ok());
        assert!(check(&allowed, &Method::DELETE, &headers(&[host])).is_ok());
        assert!(
            check(
                &allowed,
                &Method::GET,
                &headers(&[("host", "rebind.evil.example:7878")])
            )
            .is_err()
        );
    }
}

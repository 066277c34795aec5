//! Issue 5: who may call what. Every operation of the OpenAPI document × {no token, viewer,
//! operator, admin, revoked token}; the dashboard session with its CSRF token; rate limits.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// The weakest role an operation needs; `Public` for public ones, `Instance` for those of
/// the whole instance (an instance token: the first admin token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    Public,
    Viewer,
    Operator,
    Admin,
    Instance,
}

pub(crate) struct Route {
    pub(crate) method: &'static str,
    /// As in the OpenAPI document.
    pub(crate) path: &'static str,
    pub(crate) need: Need,
    body: Option<Value>,
}

fn route(method: &'static str, path: &'static str, need: Need, body: Option<Value>) -> Route {
    Route {
        method,
        path,
        need,
        body,
    }
}

pub(crate) fn matrix() -> Vec<Route> {
    use Need::*;
    let job = json!({ "action": { "type": "command", "program": "true" } });
    let nothing = json!({ "ids": [] });
    let schedule =
        json!({ "name": "matrix", "cron": "0 3 * * *", "paused": true, "job": job.clone() });
    vec![
        route("GET", "/healthz", Public, None),
        route("GET", "/readyz", Public, None),
        route("GET", "/api/v1/openapi.json", Public, None),
        route("GET", "/metrics", Instance, None),
        route("GET", "/api/v1/jobs", Viewer, None),
        route(
            "POST",
            "/api/v1/jobs/batch",
            Operator,
            Some(json!({ "jobs": [job.clone()] })),
        ),
        route("POST", "/api/v1/jobs", Operator, Some(job)),
        route("GET", "/api/v1/jobs/counts", Viewer, None),
        route("GET", "/api/v1/jobs/{id}", Viewer, None),
        route("GET", "/api/v1/jobs/{id}/attempts", Viewer, None),
        route("GET", "/api/v1/jobs/{id}/events", Viewer, None),
        route("GET", "/api/v1/jobs/{id}/log", Viewer, None),
        route("POST", "/api/v1/jobs/{id}/cancel", Operator, None),
        route("POST", "/api/v1/jobs/{id}/retry", Operator, None),
        route("GET", "/api/v1/jobs/{id}/notifications", Viewer, None),
        route("GET", "/api/v1/notifications", Viewer, None),
        route("GET", "/api/v1/circuits", Viewer, None),
        route("POST", "/api/v1/circuits/{target}/close", Admin, None),
        route("GET", "/api/v1/circuits/history", Viewer, None),
        route("GET", "/api/v1/dlq", Viewer, None),
        route(
            "POST",
            "/api/v1/dlq/requeue",
            Operator,
            Some(nothing.clone()),
        ),
        route("POST", "/api/v1/dlq/purge", Admin, Some(nothing)),
        route("GET", "/api/v1/queues", Viewer, None),
        route("POST", "/api/v1/queues/{name}/pause", Operator, None),
        route("POST", "/api/v1/queues/{name}/resume", Operator, None),
        route("GET", "/api/v1/policies", Viewer, None),
        route(
            "POST",
            "/api/v1/policies",
            Admin,
            Some(json!({ "name": "matrix", "policy": { "max_attempts": 3 } })),
        ),
        route("GET", "/api/v1/policies/active", Viewer, None),
        route(
            "POST",
            "/api/v1/policies/simulate",
            Viewer,
            Some(json!({ "max_attempts": 3 })),
        ),
        route(
            "PUT",
            "/api/v1/policies/active",
            Admin,
            Some(json!({ "name": null })),
        ),
        route("GET", "/api/v1/policies/{name}", Viewer, None),
        route(
            "PUT",
            "/api/v1/policies/{name}",
            Admin,
            Some(json!({ "max_attempts": 4 })),
        ),
        route(
            "PATCH",
            "/api/v1/policies/{name}",
            Admin,
            Some(json!({ "max_delay": "10m" })),
        ),
        route("DELETE", "/api/v1/policies/{name}", Admin, None),
        route("GET", "/api/v1/schedules", Viewer, None),
        route("POST", "/api/v1/schedules", Admin, Some(schedule.clone())),
        route("GET", "/api/v1/schedules/{name}", Viewer, None),
        route("PUT", "/api/v1/schedules/{name}", Admin, Some(schedule)),
        route("DELETE", "/api/v1/schedules/{name}", Admin, None),
        route("POST", "/api/v1/schedules/{name}/pause", Operator, None),
        route("POST", "/api/v1/schedules/{name}/resume", Operator, None),
        route("POST", "/api/v1/schedules/{name}/trigger", Operator, None),
        route("GET", "/api/v1/events", Viewer, None),
        route("GET", "/api/v1/ws", Viewer, None),
        route("GET", "/api/v1/stats", Viewer, None),
        route("GET", "/api/v1/session", Viewer, None),
        route("DELETE", "/api/v1/session", Viewer, None),
        route("GET", "/api/v1/tokens", Admin, None),
        route(
            "POST",
            "/api/v1/tokens",
            Admin,
            Some(json!({ "name": "made-in-matrix", "role": "viewer" })),
        ),
        route("DELETE", "/api/v1/tokens/{id}", Admin, None),
        route("GET", "/api/v1/channels", Viewer, None),
        route(
            "PUT",
            "/api/v1/channels/{name}",
            Admin,
            Some(json!({ "kind": "webhook", "url": "http://127.0.0.1:9/hook" })),
        ),
        route("DELETE", "/api/v1/channels/{name}", Admin, None),
        route("GET", "/api/v1/orgs", Viewer, None),
        route(
            "POST",
            "/api/v1/orgs",
            Instance,
            Some(json!({ "name": "matrix-org" })),
        ),
        route("GET", "/api/v1/orgs/{name}", Viewer, None),
        route(
            "PUT",
            "/api/v1/orgs/{name}",
            Instance,
            Some(json!({ "max_running": null })),
        ),
    ]
}

/// The names a route's `{id}` and `{name}` stand for.
pub(crate) struct Names<'a> {
    pub(crate) job: &'a str,
    pub(crate) token: &'a str,
}

pub(crate) async fn call(
    server: &Server,
    client: &reqwest::Client,
    route: &Route,
    names: &Names<'_>,
) -> u16 {
    let path = route
        .path
        .replace(
            "{id}",
            if route.path.contains("tokens") {
                names.token
            } else {
                names.job
            },
        )
        .replace(
            "{name}",
            if route.path.contains("policies") || route.path.contains("schedules") {
                "matrix"
            } else if route.path.contains("orgs") {
                "default"
            } else {
                "deploy"
            },
        )
        .replace("{target}", "metis-rpc");
    let url = format!("{}{path}", server.url);
    let method = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
    let mut request = client.request(method, url);
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    // Streams answer with their headers at once; the status is all this test reads.
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("answered in time")
        .expect("request sent");
    response.status().as_u16()
}

#[tokio::test]
async fn every_route_requires_its_role_and_revoked_tokens_are_refused() {
    let server = Server::start(&[]).await;
    let job = server.submit(&["true"], json!({})).await;
    server.wait_terminal(&job, Duration::from_secs(10)).await;

    // Every operation of the served document is in the matrix, and nothing else.
    let (_, doc) = server.get("/openapi.json").await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut tested: BTreeSet<(String, String)> = matrix()
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    tested.remove(&("GET".to_owned(), "/api/v1/openapi.json".to_owned()));
    // Login is public by nature and checked below: a bad token is refused, a good one logs in.
    documented.remove(&("POST".to_owned(), "/api/v1/session".to_owned()));
    assert_eq!(
        documented, tested,
        "the matrix must cover every documented operation"
    );

    let viewer = server.create_token("v", "viewer").await;
    let operator = server.create_token("o", "operator").await;
    let revoked = server.create_token("gone", "admin").await;
    let r = server
        .http
        .delete(server.api("/tokens/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let admin = server.token.clone().expect("admin token");

    let callers: [(&str, Option<&str>, Option<Need>); 5] = [
        ("no token", None, None),
        ("revoked", Some(&revoked), None),
        ("viewer", Some(&viewer), Some(Need::Viewer)),
        ("operator", Some(&operator), Some(Need::Operator)),
        // The first token is the instance's admin.
        ("admin", Some(&admin), Some(Need::Instance)),
    ];
    let names = Names {
        job: &job,
        token: "nobody",
    };
    let mut failures = Vec::new();
    for route in matrix() {
        for (who, token, role) in &callers {
            let status = call(&server, &client_with(*token), &route, &names).await;
            let allowed = route.need == Need::Public || role.is_some_and(|r| r >= route.need);
            let expected_ok = if allowed {
                !matches!(status, 401 | 403) && status < 500
            } else if role.is_none() {
                status == 401
            } else {
                status == 403
            };
            if !expected_ok {
                failures.push(format!(
                    "{} {} as {who}: {status} (needs {:?})",
                    route.method, route.path, route.need
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Login: a bad token is refused, a good one gets an HttpOnly, SameSite cookie.
    let anonymous = client_with(None);
    let bad = anonymous
        .post(server.api("/session"))
        .json(&json!({ "token": revoked }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let good = anonymous
        .post(server.api("/session"))
        .json(&json!({ "token": viewer }))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let cookie = good.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session: Value = good.json().await.unwrap();
    assert_eq!(session["role"], "viewer");
}

/// A cookie session must send its CSRF token with every change; bearer tokens need none.
#[tokio::test]
async fn session_changes_need_the_csrf_token() {
    let server = Server::start(&[]).await;
    let admin = server.token.clone().unwrap();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login: Value = browser
        .post(server.api("/session"))
        .json(&json!({ "token": admin }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = login["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 64);
    // Reads work with the cookie alone.
    let r = browser.get(server.api("/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let job = json!({ "action": { "type": "command", "program": "true" } });
    let refused = browser
        .post(server.api("/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf");
    let wrong = browser
        .post(server.api("/jobs"))
        .header("X-CSRF-Token", "0".repeat(64))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let accepted = browser
        .post(server.api("/jobs"))
        .header("X-CSRF-Token", &csrf)
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
    let (jobs, _) = server.get("/jobs").await;
    assert_eq!(jobs, 200);
    let (_, page) = server.get("/jobs").await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        1,
        "refused requests created nothing"
    );
    // Logging out clears the cookie.
    let out = browser
        .delete(server.api("/session"))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let after = browser.get(server.api("/jobs")).send().await.unwrap();
    assert_eq!(after.status(), 401);
}

/// A flood from one token gets 429 with Retry-After; other tokens are not slowed down.
#[tokio::test]
async fn a_flood_from_one_token_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(
        dir.join("retryd.toml"),
        "[auth]\nrate_limit = 5\nrate_burst = 10\n",
    )
    .unwrap();
    let config = dir.join("retryd.toml").display().to_string();
    let server = Server::start_in(&dir, &["--config", &config]).await;
    let other = server.create_token("other", "viewer").await;
    let flooder = client_with(server.token.as_deref());
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let r = flooder.get(server.api("/queues")).send().await.unwrap();
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (5..=14).contains(&passed),
        "a burst of at most 10 (the harness spent some), then 429: {statuses:?}"
    );
    assert!(limited >= 26, "{statuses:?}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&seconds), "Retry-After {seconds}");
    // Another token has its own budget.
    let r = client_with(Some(&other))
        .get(server.api("/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // After the wait, the flooder may call again.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let r = flooder.get(server.api("/queues")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

//! Issue 17: organizations. Each owns its jobs, queues, policies, schedules and tokens;
//! another organization's token sees none of them, changes none of them, and streams none of
//! their events; each has its own default policy; claims share the workers between them; a
//! database from before organizations moves into `default` and keeps working.

use crate::auth::{Names, Need, call, matrix};
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn sqlite() -> Server {
    Server::start(&[]).await
}

async fn postgres() -> Server {
    let database = retryd_store_postgres::testing::fresh_database().await;
    Server::start_node(&database, &[]).await
}

/// A request as `token`, acting in its own organization.
async fn send(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client_with(Some(token)).request(method, server.api(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates organization `name` (as the instance admin) and a token of it with `role`.
async fn org_token(server: &Server, org: &str, name: &str, role: &str) -> String {
    let (status, body) = server.post("/orgs", json!({ "name": org })).await;
    assert!(
        status == 201 || status == 409,
        "org create: {status} {body}"
    );
    let (status, body) = server
        .post("/tokens", json!({ "name": name, "role": role, "org": org }))
        .await;
    assert_eq!(status, 201, "token create: {body}");
    assert_eq!(body["org"], org);
    body["token"].as_str().unwrap().to_owned()
}

/// What the default organization holds, as its admin reads it: compared before and after
/// another organization's token called every operation.
async fn default_state(server: &Server, job: &str) -> Value {
    let (_, job) = server.get(&format!("/jobs/{job}")).await;
    let (_, policy) = server.get("/policies/matrix").await;
    let (_, schedule) = server.get("/schedules/matrix").await;
    let (_, queues) = server.get("/queues").await;
    let (_, tokens) = server.get("/tokens").await;
    let (_, channels) = server.get("/channels").await;
    json!({
        "channels": channels,
        "job": { "state": job["state"], "attempt": job["attempt"], "updated_at": job["updated_at"] },
        "policy": policy["policy"],
        "schedule": { "paused": schedule["paused"], "cron": schedule["cron"] },
        "queues": queues,
        "tokens": tokens,
    })
}

async fn another_organization_sees_and_changes_nothing(server: Server) {
    // The default organization: a dead job, a policy, a schedule, a paused queue, a token.
    let job = server
        .submit(&["false"], json!({ "policy": { "max_attempts": 1 } }))
        .await;
    server.wait_terminal(&job, Duration::from_secs(10)).await;
    let (status, _) = server
        .post(
            "/policies",
            json!({ "name": "matrix", "policy": { "max_attempts": 7 } }),
        )
        .await;
    assert_eq!(status, 201);
    let job_body = json!({ "action": { "type": "command", "program": "true" } });
    let (status, _) = server
        .post(
            "/schedules",
            json!({ "name": "matrix", "cron": "0 3 * * *", "paused": true, "job": job_body }),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(server.post("/queues/deploy/pause", json!({})).await.0, 200);
    let r = server
        .http
        .put(server.api("/channels/deploy"))
        .json(&json!({ "kind": "slack", "url": "http://127.0.0.1:9/T0/B0/ours", "on": ["failed", "retrying"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.create_token("ours", "viewer").await;
    let before = default_state(&server, &job).await;

    // An admin of another organization calls every documented operation with the default
    // organization's ids and names.
    let intruder = org_token(&server, "other", "intruder", "admin").await;
    let client = client_with(Some(&intruder));
    let names = Names {
        job: &job,
        token: "ours",
    };
    // The operations on a named thing first, before the intruder made any of its own (its
    // POST /policies and /schedules create a "matrix" of its own organization).
    let (named, rest): (Vec<_>, Vec<_>) = matrix()
        .into_iter()
        .partition(|route| route.path.contains('{'));
    let mut failures = Vec::new();
    for route in named.into_iter().chain(rest) {
        let status = call(&server, &client, &route, &names).await;
        // A queue is paused and a channel set by name: its own organization's, whatever
        // the name (the default organization's are checked unchanged below).
        let acts_on_its_own = ["/queues/", "/channels/"]
            .iter()
            .any(|p| route.path.contains(p));
        let names_a_thing = route.path.contains('{') && !acts_on_its_own;
        let ok = if route.need == Need::Instance {
            status == 403 || status == 404
        } else if names_a_thing {
            status == 404
        } else {
            status < 500 && status != 401 && status != 403
        };
        if !ok {
            failures.push(format!("{} {}: {status}", route.method, route.path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        default_state(&server, &job).await,
        before,
        "another organization changed nothing"
    );

    // Nor does it read anything: lists, the dead-letter queue and stats hold only its own.
    let (_, page) = send(&server, &intruder, "GET", "/jobs?limit=500", None).await;
    let listed = page["jobs"].as_array().unwrap();
    assert!(listed.iter().all(|j| j["org"] == "other"), "{page}");
    assert!(listed.iter().all(|j| j["id"] != job.as_str()));
    let (_, dlq) = send(&server, &intruder, "GET", "/dlq", None).await;
    assert_eq!(dlq["total"], 0, "{dlq}");
    let (_, stats) = send(&server, &intruder, "GET", "/stats", None).await;
    let created: u64 = stats["totals"]
        .as_object()
        .map(|t| t.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(
        created,
        listed.len() as u64,
        "stats count its jobs only: {stats}"
    );
    // Its own "matrix" (made by the matrix's POST) is not the default organization's.
    let (_, policies) = send(&server, &intruder, "GET", "/policies", None).await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["policy"]["max_attempts"] != 7),
        "{policies}"
    );
    // Naming the default organization does not help a token of another.
    let r = client
        .get(server.api("/jobs"))
        .header("X-Retryd-Org", "default")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Its live streams carry its own events only.
    let sse = client.get(server.api("/events")).send().await.expect("SSE");
    let mut ws_request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.api("/ws").replacen("http://", "ws://", 1),
        )
        .unwrap();
    ws_request.headers_mut().insert(
        "authorization",
        format!("Bearer {intruder}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_request).await.unwrap();
    let theirs = server.submit(&["true"], json!({})).await;
    let (status, own) = send(
        &server,
        &intruder,
        "POST",
        "/jobs",
        Some(json!({ "action": { "type": "command", "program": "true" } })),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    let own = own["id"].as_str().unwrap().to_owned();
    server.wait_terminal(&theirs, Duration::from_secs(10)).await;
    let done = |events: &[Value]| {
        events
            .iter()
            .any(|e| e["job_id"] == own.as_str() && e["to"] == "succeeded")
    };
    let over_sse = read_sse(sse, Duration::from_secs(15), done).await;
    assert!(done(&over_sse), "its own job's events arrive: {over_sse:?}");
    let mut over_ws: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done(&over_ws) && Instant::now() < deadline {
        use futures::StreamExt;
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) =
            tokio::time::timeout(Duration::from_secs(1), socket.next()).await
        {
            over_ws.push(serde_json::from_str(&text).unwrap());
        }
    }
    assert!(done(&over_ws), "{over_ws:?}");
    for event in over_sse.iter().chain(&over_ws) {
        assert_ne!(
            event["job_id"],
            theirs.as_str(),
            "another organization's event"
        );
        assert_ne!(
            event["job_id"],
            job.as_str(),
            "another organization's event"
        );
    }
}

#[tokio::test]
async fn another_organizations_token_sees_and_changes_nothing_on_sqlite() {
    another_organization_sees_and_changes_nothing(sqlite().await).await;
}

#[tokio::test]
async fn another_organizations_token_sees_and_changes_nothing_on_postgres() {
    another_organization_sees_and_changes_nothing(postgres().await).await;
}

async fn each_organization_has_its_own_default_policy(server: Server) {
    let mut tokens = std::collections::HashMap::new();
    for (org, attempts) in [("alpha", 2), ("beta", 5)] {
        let admin = org_token(&server, org, &format!("{org}-admin"), "admin").await;
        let operator = org_token(&server, org, &format!("{org}-ops"), "operator").await;
        let name = format!("rpc-{org}");
        let (status, body) = send(
            &server,
            &admin,
            "POST",
            "/policies",
            Some(json!({ "name": name, "policy": { "max_attempts": attempts } })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = send(
            &server,
            &admin,
            "PUT",
            "/policies/active",
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["name"], name.as_str());
        assert_eq!(body["default"], true);
        tokens.insert(org, (admin, operator));
    }
    let (alpha_admin, alpha_ops) = &tokens["alpha"];
    let (_, beta_ops) = &tokens["beta"];
    // A job that names no policy gets its organization's default.
    for (ops, expected) in [(alpha_ops, "rpc-alpha"), (beta_ops, "rpc-beta")] {
        let (status, job) = send(
            &server,
            ops,
            "POST",
            "/jobs",
            Some(json!({ "action": { "type": "command", "program": "true" } })),
        )
        .await;
        assert_eq!(status, 201, "{job}");
        assert_eq!(job["policy_name"], expected, "{job}");
        let (_, active) = send(&server, ops, "GET", "/policies/active", None).await;
        assert_eq!(active["name"], expected);
    }
    // The default organization is untouched: the instance's rules.
    let (_, job) = server
        .post(
            "/jobs",
            json!({ "action": { "type": "command", "program": "true" } }),
        )
        .await;
    assert_eq!(job["policy_name"], "default");
    // Operators of either cannot change policies.
    for ops in [alpha_ops, beta_ops] {
        let (status, _) = send(
            &server,
            ops,
            "PUT",
            "/policies/active",
            Some(json!({ "name": null })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _) = send(
            &server,
            ops,
            "PATCH",
            "/policies/rpc-alpha",
            Some(json!({ "max_attempts": 9 })),
        )
        .await;
        assert_eq!(status, 403);
    }
    // An admin of one cannot change (or see) the other's.
    for (method, body) in [
        ("PATCH", Some(json!({ "max_attempts": 9 }))),
        ("PUT", Some(json!({ "max_attempts": 9 }))),
        ("DELETE", None),
        ("GET", None),
    ] {
        let (status, _) = send(&server, alpha_admin, method, "/policies/rpc-beta", body).await;
        assert_eq!(status, 404, "{method}");
    }
    let (status, _) = send(
        &server,
        alpha_admin,
        "PUT",
        "/policies/active",
        Some(json!({ "name": "rpc-beta" })),
    )
    .await;
    assert_eq!(status, 422, "another organization's policy is unknown here");
    let (_, beta) = send(&server, beta_ops, "GET", "/policies/rpc-beta", None).await;
    assert_eq!(beta["policy"]["max_attempts"], 5);
    assert_eq!(beta["active"], true);
}

#[tokio::test]
async fn each_organization_has_its_own_default_policy_on_sqlite() {
    each_organization_has_its_own_default_policy(sqlite().await).await;
}

#[tokio::test]
async fn each_organization_has_its_own_default_policy_on_postgres() {
    each_organization_has_its_own_default_policy(postgres().await).await;
}

/// Organization A enqueues 5,000 jobs, then B enqueues 50: B's jobs all start within a few
/// seconds, beside A's backlog instead of after it.
async fn a_small_organization_is_not_starved_by_a_backlog(server: Server) {
    let big = org_token(&server, "big", "big-ops", "operator").await;
    let small = org_token(&server, "small", "small-ops", "operator").await;
    let job = || json!({ "action": { "type": "command", "program": "sleep", "args": ["0.2"] } });
    for _ in 0..5 {
        let batch: Vec<Value> = (0..1000).map(|_| job()).collect();
        let (status, body) = send(
            &server,
            &big,
            "POST",
            "/jobs/batch",
            Some(json!({ "jobs": batch })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let batch: Vec<Value> = (0..50).map(|_| job()).collect();
    let submitted = Instant::now();
    let (status, body) = send(
        &server,
        &small,
        "POST",
        "/jobs/batch",
        Some(json!({ "jobs": batch })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    loop {
        let (_, page) = send(
            &server,
            &small,
            "GET",
            "/jobs?state=pending&limit=100",
            None,
        )
        .await;
        let waiting = page["jobs"].as_array().unwrap().len();
        if waiting == 0 {
            break;
        }
        assert!(
            submitted.elapsed() < Duration::from_secs(15),
            "{waiting} of the small organization's jobs still wait after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started_in = submitted.elapsed();
    let (_, page) = send(&server, &big, "GET", "/jobs?state=pending&limit=500", None).await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        500,
        "the big backlog still waits: the small one went beside it, not after it"
    );
    eprintln!("the small organization's 50 jobs all started within {started_in:?}");
}

#[tokio::test]
async fn a_small_organization_is_not_starved_by_a_backlog_on_sqlite() {
    a_small_organization_is_not_starved_by_a_backlog(sqlite().await).await;
}

#[tokio::test]
async fn a_small_organization_is_not_starved_by_a_backlog_on_postgres() {
    a_small_organization_is_not_starved_by_a_backlog(postgres().await).await;
}

/// The tokens, job, policy and queue a database from the release before organizations holds.
struct OldData {
    admin: retryd_server::auth::MintedToken,
    viewer: retryd_server::auth::MintedToken,
    pending: retryd_core::JobId,
    policy: String,
}

impl OldData {
    fn new() -> OldData {
        let mint = |name: &str, role| {
            let grant = retryd_server::auth::Grant {
                role,
                org: "unused".into(),
                instance: false,
            };
            retryd_server::auth::mint(name, grant, "admin", chrono::Utc::now())
        };
        OldData {
            admin: mint("admin", retryd_core::Role::Admin),
            viewer: mint("grafana", retryd_core::Role::Viewer),
            pending: retryd_core::JobId::new(),
            policy: serde_json::to_string(&retryd_core::Policy::default()).unwrap(),
        }
    }
}

/// The migration files of a backend up to `last` (the schema of the release before), in order.
fn old_migrations(backend: &str, last: i64) -> Vec<(i64, String)> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("crates/store-{backend}/migrations"));
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let name = file.file_name()?.to_string_lossy().into_owned();
            let version: i64 = name[..4].parse().ok()?;
            (version <= last).then(|| (version, std::fs::read_to_string(&file).unwrap()))
        })
        .collect()
}

/// A SQLite file as the release before organizations left it (schema 0010).
fn old_sqlite(path: &std::path::Path, old: &OldData) {
    let mut db = rusqlite::Connection::open(path).unwrap();
    let tx = db.transaction().unwrap();
    tx.execute_batch(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    for (version, sql) in old_migrations("sqlite", 10) {
        tx.execute_batch(&sql).unwrap();
        tx.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version])
            .unwrap();
    }
    let now = chrono::Utc::now().timestamp_millis();
    for token in [&old.admin.record, &old.viewer.record] {
        tx.execute(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![token.id, token.name, token.role.as_str(), token.secret_hash, now, token.created_by],
        )
        .unwrap();
    }
    tx.execute(
        "INSERT INTO jobs (id, queue, kind, action, policy_name, policy, priority, run_at, labels, state, attempt, next_attempt_at, created_at, updated_at) \
         VALUES (?1, 'deploy', 'release', '{\"type\":\"command\",\"program\":\"true\",\"args\":[]}', 'default', ?2, 50, ?3, '{}', 'pending', 0, ?3, ?3, ?3)",
        rusqlite::params![old.pending.to_string(), old.policy, now],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO events (job_id, at, from_state, to_state, reason, actor) VALUES (?1, ?2, NULL, 'pending', 'submitted', 'api')",
        rusqlite::params![old.pending.to_string(), now],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by) VALUES ('rpc', ?1, 1, ?2, 'admin')",
        rusqlite::params![old.policy, now],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO queues (name, paused, updated_at, updated_by) VALUES ('mail', 1, ?1, 'admin')",
        [now],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// A PostgreSQL database as the release before organizations left it (schema 0012).
async fn old_postgres(database: &str, old: &OldData) {
    let (mut client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("CREATE TABLE retryd_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    for (version, sql) in old_migrations("postgres", 12) {
        tx.batch_execute(&sql).await.unwrap();
        tx.execute(
            "INSERT INTO retryd_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .unwrap();
    }
    for token in [&old.admin.record, &old.viewer.record] {
        tx.execute(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_at, created_by) VALUES ($1, $2, $3, $4, now(), $5)",
            &[&token.id, &token.name, &token.role.as_str(), &token.secret_hash, &token.created_by],
        )
        .await
        .unwrap();
    }
    tx.execute(
        "INSERT INTO jobs (id, queue, kind, action, policy_name, policy, priority, run_at, labels, state, attempt, next_attempt_at, created_at, updated_at) \
         VALUES ($1::text::uuid, 'deploy', 'release', '{\"type\":\"command\",\"program\":\"true\",\"args\":[]}', 'default', $2::text::jsonb, 50, now(), '{}', 'pending', 0, now(), now(), now())",
        &[&old.pending.to_string(), &old.policy],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO events (job_id, at, from_state, to_state, reason, actor) VALUES ($1::text::uuid, now(), NULL, 'pending', 'submitted', 'api')",
        &[&old.pending.to_string()],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by) VALUES ('rpc', $1::text::jsonb, true, now(), 'admin')",
        &[&old.policy],
    )
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO queues (name, paused, updated_at, updated_by) VALUES ('mail', true, now(), 'admin')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// After the upgrade: everything lands in `default`, the old tokens keep working (the admin's
/// as the instance's), and the old CLI commands answer as before.
async fn moved_into_default(server: Server, old: &OldData) {
    assert!(
        !server.log().contains("created the first admin token"),
        "no new first token: tokens exist"
    );
    let pending = old.pending.to_string();
    let job = server
        .wait_terminal(&pending, Duration::from_secs(15))
        .await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["org"], "default");
    let env = server.cli_env();
    for args in [
        vec!["jobs"],
        vec!["show", &pending],
        vec!["queue", "list"],
        vec!["policy", "list"],
        vec!["token", "list"],
    ] {
        let out = cli(&args, &env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let tokens = stdout(&cli(&["token", "list"], &env));
    assert!(
        tokens.contains("grafana") && tokens.contains("default"),
        "{tokens}"
    );
    let queues = stdout(&cli(&["queue", "list"], &env));
    assert!(
        queues.contains("mail") && queues.contains("paused"),
        "{queues}"
    );
    assert!(stdout(&cli(&["policy", "list"], &env)).contains("rpc"));
    // The old viewer reads `default`; the old admin is the instance's and creates orgs.
    let (status, page) = send(&server, &old.viewer.plaintext, "GET", "/jobs", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["jobs"][0]["id"], pending);
    let out = cli(&["org", "create", "acme"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let orgs = stdout(&cli(&["org", "list"], &env));
    assert!(orgs.contains("acme") && orgs.contains("default"), "{orgs}");
    let metrics = client_with(Some(&old.viewer.plaintext))
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        metrics.status(),
        403,
        "a viewer of an organization is not the instance's"
    );
}

#[tokio::test]
async fn a_sqlite_database_from_before_organizations_moves_into_default() {
    let old = OldData::new();
    let dir = tempfile::tempdir().unwrap().keep();
    old_sqlite(&dir.join("retryd.db"), &old);
    remember_admin_token(&dir.join("retryd.db"), &old.admin.plaintext);
    moved_into_default(Server::start_in(&dir, &[]).await, &old).await;
}

#[tokio::test]
async fn a_postgres_database_from_before_organizations_moves_into_default() {
    let old = OldData::new();
    let database = retryd_store_postgres::testing::fresh_database().await;
    old_postgres(&database, &old).await;
    remember_admin_token(std::path::Path::new(&database), &old.admin.plaintext);
    moved_into_default(Server::start_node(&database, &[]).await, &old).await;
}

/// The CLI: organizations, `--org` and `RETRYD_ORG`, tokens of an organization.
#[tokio::test]
async fn the_cli_manages_organizations_and_acts_in_one() {
    let server = Server::start(&[]).await;
    let env = server.cli_env();
    let out = cli(&["org", "create", "acme", "--max-running", "4"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 running"), "{}", stdout(&out));
    let out = cli(
        &[
            "token", "create", "acme-ci", "--role", "operator", "--org", "acme",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("organization 'acme'"),
        "{}",
        stdout(&out)
    );
    let out = cli(&["submit", "--org", "acme", "--", "true"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut with_org = env.clone();
    with_org.push(("RETRYD_ORG", "acme"));
    let listed = stdout(&cli(&["jobs", "--json"], &with_org));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    let default: Value = serde_json::from_str(&stdout(&cli(&["jobs", "--json"], &env))).unwrap();
    assert!(default["jobs"].as_array().unwrap().is_empty(), "{default}");
    let out = cli(
        &[
            "org",
            "update",
            "acme",
            "--no-limit",
            "--retry-budget",
            "30",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("fair share, 30 retries/min"),
        "{}",
        stdout(&out)
    );
    let out = cli(&["jobs", "--org", "nope"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("organization 'nope' not found"),
        "{}",
        stderr(&out)
    );
}

/// An organization's admins add a channel with the CLI; its jobs' failures reach it, another
/// organization's do not; its secrets are never shown back; an operator cannot add one.
#[tokio::test]
async fn an_organizations_channel_gets_its_own_jobs_notifications() {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hooks/secret-path",
        post(move |body: String| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = Server::start(&[]).await;
    let acme_admin = org_token(&server, "acme", "acme-admin", "admin").await;
    let acme_ops = org_token(&server, "acme", "acme-ops", "operator").await;
    let env = [
        ("RETRYD_SERVER", server.url.as_str()),
        ("RETRYD_TOKEN", acme_admin.as_str()),
    ];
    let url = format!("http://{address}/hooks/secret-path");
    let out = cli(
        &[
            "channel",
            "set",
            "ops",
            "--kind",
            "webhook",
            "--url",
            &url,
            "--header",
            "X-Token=hunter2",
            "--on",
            "failed",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&cli(&["channel", "list"], &env));
    assert!(
        listed.contains("ops") && listed.contains("127.0.0.1"),
        "{listed}"
    );
    let shown = stdout(&cli(&["channel", "list", "--json"], &env));
    assert!(
        !shown.contains("secret-path") && !shown.contains("hunter2"),
        "secrets are never shown back: {shown}"
    );
    let (status, _) = send(
        &server,
        &acme_ops,
        "PUT",
        "/channels/mine",
        Some(json!({ "kind": "webhook", "url": url })),
    )
    .await;
    assert_eq!(status, 403, "operators do not manage channels");
    let (status, body) = send(
        &server,
        &acme_admin,
        "PUT",
        "/channels/bad",
        Some(json!({ "kind": "webhook", "url": "ftp://x", "on": ["sometimes"] })),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["details"]["field"], "on", "{body}");

    // One failed job in acme, one in the default organization.
    let failing = json!({ "action": { "type": "command", "program": "false" }, "policy": { "max_attempts": 1 } });
    let (_, acme_job) = send(&server, &acme_ops, "POST", "/jobs", Some(failing.clone())).await;
    let acme_job = acme_job["id"].as_str().unwrap().to_owned();
    let (_, ours) = server.post("/jobs", failing).await;
    let ours = ours["id"].as_str().unwrap().to_owned();
    server.wait_terminal(&ours, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["job_id"], acme_job.as_str(), "{got:?}");
    assert_eq!(got[0]["org"], "acme");
    let (_, log) = send(&server, &acme_admin, "GET", "/notifications", None).await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["sink"], "@acme/ops");
    let (_, ours_log) = server.get("/notifications").await;
    assert!(ours_log.as_array().unwrap().is_empty(), "{ours_log}");
    let out = cli(&["channel", "delete", "ops"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&cli(&["channel", "list"], &env)).contains("no channels"));
}

/// An organization at its running limit: its due jobs say they wait for its share, and the
/// limit holds while another organization's jobs run beside.
#[tokio::test]
async fn a_job_says_when_it_waits_for_its_organizations_share() {
    let server = Server::start(&[]).await;
    let (status, _) = server
        .post("/orgs", json!({ "name": "capped", "max_running": 1 }))
        .await;
    assert_eq!(status, 201);
    let ops = org_token(&server, "capped", "capped-ops", "operator").await;
    let sleeper = json!({ "action": { "type": "command", "program": "sleep", "args": ["3"] } });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, job) = send(&server, &ops, "POST", "/jobs", Some(sleeper.clone())).await;
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let ours = server.submit(&["sleep", "1"], json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let waiting = loop {
        let (_, a) = send(&server, &ops, "GET", &format!("/jobs/{}", ids[0]), None).await;
        let (_, b) = send(&server, &ops, "GET", &format!("/jobs/{}", ids[1]), None).await;
        let (running, other) = match (a["state"].as_str(), b["state"].as_str()) {
            (Some("running"), _) => (a, b),
            (_, Some("running")) => (b, a),
            _ => {
                assert!(Instant::now() < deadline, "neither started: {a} {b}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        assert_eq!(
            other["state"], "pending",
            "one at a time: {running} {other}"
        );
        break other;
    };
    let reason = waiting["waiting_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("organization's share"), "{reason}");
    // The default organization's job is not held by capped's limit.
    server
        .wait_for(&ours, Duration::from_secs(5), |j| j["state"] != "pending")
        .await;
}

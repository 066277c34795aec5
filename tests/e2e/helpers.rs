//! The harness: a real `retryd serve` process on a free loopback port with its own SQLite
//! file, the real CLI, and a small API client.

use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_retryd");

/// The admin token each database's first server printed, by database: later servers on the
/// same database (restarts, more nodes) print none.
static ADMIN_TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The database itself: node URLs differ only in their query (`application_name`).
fn database_key(database: &str) -> &str {
    database.split('?').next().unwrap_or(database)
}

/// Records the admin token of a database made outside a server (an upgrade test's), so that
/// a server started on it uses that token.
pub fn remember_admin_token(database: &Path, token: &str) {
    ADMIN_TOKENS
        .lock()
        .unwrap()
        .push((database.display().to_string(), token.to_owned()));
}

fn admin_token_of(database: &str) -> Option<String> {
    let tokens = ADMIN_TOKENS.lock().unwrap();
    tokens
        .iter()
        .find(|(d, _)| d == database_key(database))
        .map(|(_, t)| t.clone())
}

/// An HTTP client that sends `token` as a bearer token.
pub fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// An inline policy that retries fast, for tests that do not measure backoff.
pub fn fast_policy(max_attempts: u32) -> Value {
    json!({ "max_attempts": max_attempts, "initial_delay": "50ms", "max_delay": "200ms", "jitter": "none" })
}

/// A running server. Killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub http: reqwest::Client,
    /// The database: the SQLite file in `dir`, or a PostgreSQL URL.
    database: String,
    /// The admin token (None when the server runs with `--auth false`).
    pub token: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server in a fresh temporary directory.
    pub async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Server::start_in(&dir, extra).await
    }

    /// Starts a server on the database in `dir` (a restart when one ran there before).
    pub async fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let database = dir.join("retryd.db").display().to_string();
        Server::start_on(dir, &database, extra).await
    }

    /// Starts a node on a shared database (a PostgreSQL URL), logging into its own folder.
    pub async fn start_node(database: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        Server::start_on(&dir, database, extra).await
    }

    /// Starts a server in a fresh temporary directory with more environment variables.
    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let database = dir.join("retryd.db").display().to_string();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::start_on_env(&dir, &database, extra, env).await
    }

    async fn start_on(dir: &Path, database: &str, extra: &[&str]) -> Server {
        Server::start_on_env(dir, database, extra, Vec::new()).await
    }

    async fn start_on_env(
        dir: &Path,
        database: &str,
        extra: &[&str],
        env: Vec<(String, String)>,
    ) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, url, printed) = spawn(dir, database, &args, &env);
        if let Some(token) = printed {
            ADMIN_TOKENS
                .lock()
                .unwrap()
                .push((database_key(database).to_owned(), token));
        }
        let no_auth = args.windows(2).any(|w| w[0] == "--auth" && w[1] == "false");
        // Built first, so that a failed start below still stops the child (Drop).
        let mut server = Server {
            child: Some(child),
            url,
            dir: dir.to_path_buf(),
            http: client_with(None),
            database: database.to_owned(),
            token: None,
            args,
            env,
        };
        if !no_auth {
            // Nodes started together: the one that created the token may print it a moment
            // after this one is up.
            let deadline = Instant::now() + Duration::from_secs(20);
            let token = loop {
                if let Some(token) = admin_token_of(database) {
                    break token;
                }
                assert!(
                    Instant::now() < deadline,
                    "no server printed the admin token of {database}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            server.http = client_with(Some(&token));
            server.token = Some(token);
        }
        server.wait_healthy().await;
        server
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not answer /healthz; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok();
        child.wait().ok().and_then(|s| s.code())
    }

    /// Waits for the server process to exit by itself (a poison job kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts the server again on the same database and flags.
    pub async fn restart(&mut self) {
        self.kill9();
        let (child, url, _) = spawn(&self.dir, &self.database, &self.args, &self.env);
        self.child = Some(child);
        self.url = url;
        self.wait_healthy().await;
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.api(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GET as a well-behaved client: a 429 is waited out as its Retry-After says (tests that
    /// read thousands of jobs meet the per-token request limit).
    pub async fn get_paced(&self, path: &str) -> (u16, Value) {
        for _ in 0..30 {
            let r = self.http.get(self.api(path)).send().await.expect("GET");
            if r.status() == 429 {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let status = r.status().as_u16();
            return (status, r.json().await.unwrap_or(Value::Null));
        }
        panic!("GET {path} stayed rate limited for 30 tries");
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.api(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits a command job; returns its id.
    pub async fn submit(&self, args: &[&str], extra: Value) -> String {
        let (program, rest) = args.split_first().expect("a command");
        let mut body = json!({ "action": { "type": "command", "program": program, "args": rest } });
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                body[k] = v;
            }
        }
        let (status, job) = self.post("/jobs", body).await;
        assert_eq!(status, 201, "submit refused: {job}");
        job["id"].as_str().expect("id").to_owned()
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        job
    }

    /// Polls until the job is in a terminal state; panics after `timeout`.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |job| {
            matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled" | "expired")
            )
        })
        .await
    }

    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not get there in {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn attempts(&self, id: &str) -> Vec<Value> {
        let (status, v) = self.get_paced(&format!("/jobs/{id}/attempts")).await;
        assert_eq!(status, 200, "attempts of {id}: {v}");
        v.as_array().cloned().expect("an array of attempts")
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let (status, v) = self.get_paced(&format!("/jobs/{id}/events")).await;
        assert_eq!(status, 200, "events of {id}: {v}");
        v.as_array().cloned().expect("an array of events")
    }

    /// Runs the real CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(args, &self.cli_env())
    }

    /// The environment that points the CLI at this server with its admin token.
    pub fn cli_env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![("RETRYD_SERVER", self.url.as_str())];
        if let Some(token) = &self.token {
            env.push(("RETRYD_TOKEN", token.as_str()));
        }
        env
    }

    /// Creates a token with `role` through the API; returns its plain text.
    pub async fn create_token(&self, name: &str, role: &str) -> String {
        let (status, body) = self
            .post("/tokens", json!({ "name": name, "role": role }))
            .await;
        assert_eq!(status, 201, "token create: {body}");
        body["token"].as_str().expect("token").to_owned()
    }
}

impl Drop for Server {
    /// A graceful stop, so that the attempts' commands do not outlive the test.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `retryd serve`; returns the child, its URL and the admin token it printed, if any.
fn spawn(
    dir: &Path,
    database: &str,
    extra: &[String],
    env: &[(String, String)],
) -> (Child, String, Option<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--database", database])
        .args(extra)
        // Tests stop servers with SIGTERM: running attempts get a second, then are released.
        .args(if extra.iter().any(|a| a == "--shutdown-grace") {
            &[][..]
        } else {
            &["--shutdown-grace", "1s"][..]
        })
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RETRYD_CONFIG")
        // The tests' HTTP targets listen on loopback, which the SSRF guard refuses unless
        // told otherwise; a test of the guard passes its own --http-allow-internal.
        .env("RETRYD_HTTP_ALLOW_INTERNAL", "127.0.0.1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn retryd serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut token = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("export RETRYD_TOKEN=").nth(1) {
                token = Some(rest.trim().to_owned());
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((url, token.take()));
            }
        }
    });
    let (url, token) = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("retryd serve did not print its address; log:\n{log}")
        });
    (child, url, token)
}

/// Runs the CLI with extra environment variables; colours are off (NO_COLOR).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    // Run from the temp dir so that a stray default never touches the working tree.
    command
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RETRYD_CONFIG")
        // The tests' HTTP targets listen on loopback, which the SSRF guard refuses unless
        // told otherwise; a test of the guard passes its own --http-allow-internal.
        .env("RETRYD_HTTP_ALLOW_INTERNAL", "127.0.0.1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .current_dir(std::env::temp_dir());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run retryd")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A shell snippet that fails with `message` on stderr until it has run `failures` times
/// (counted in `counter`), then prints "deployed".
pub fn flaky(counter: &Path, failures: u32, message: &str) -> String {
    format!(
        "n=$(cat '{c}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{c}'; \
         if [ $n -le {failures} ]; then echo '{message}' >&2; exit 1; fi; echo deployed",
        c = counter.display()
    )
}

/// Percentile of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Process ids whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) && !text.contains("cargo") {
                found.push(pid);
            }
        }
    }
    found
}

/// A stand-in service from `examples/` (a small Python script) on a loopback port, started
/// with `--port 0`; killed when dropped.
pub struct StandIn {
    child: Child,
    /// `127.0.0.1:PORT`, as the script printed it.
    pub address: String,
}

impl StandIn {
    pub fn start(script: &str, args: &[&str]) -> StandIn {
        let mut child = Command::new("python3")
            .arg(examples_dir().join(script))
            .args(["--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a stand-in with python3");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("listening on ") {
                    let _ = tx.send(address.trim().to_owned());
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("stand-in {script} did not print its address"));
        StandIn { child, address }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's `examples/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// An example file with the addresses and paths its README uses replaced by the test's
/// (the stand-in's port, a temporary state folder, the absolute `examples/` path), written
/// to `dir`. Returns the copy's path.
pub fn example_copy(file: &str, replace: &[(&str, &str)], dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(examples_dir().join(file)).expect("example file");
    let examples = format!("{}/", examples_dir().display());
    for (from, to) in replace
        .iter()
        .copied()
        .chain([("examples/", examples.as_str())])
    {
        assert!(text.contains(from), "{file} no longer mentions {from}");
        text = text.replace(from, to);
    }
    let copy = dir.join(Path::new(file).file_name().expect("a file name"));
    std::fs::write(&copy, text).expect("write the example copy");
    copy
}

/// Reads server-sent events from `response` until `stop` says so, `limit` passes or the
/// stream ends; returns the `state` events' data.
pub async fn read_sse(
    response: reqwest::Response,
    limit: Duration,
    mut stop: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut stream = response.bytes_stream();
    let mut pending = String::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !stop(&events) {
        let chunk = match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(chunk))) => chunk,
            // The server ended the stream (or died): what came before stands.
            Ok(None | Some(Err(_))) => break,
        };
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(v.trim().to_owned());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                let event: Value = serde_json::from_str(&data).expect("event JSON");
                assert_eq!(event["id"].to_string(), id, "SSE id is the event id");
                events.push(event);
            }
        }
    }
    events
}

/// Opens the live event stream (`/events` with `query`), resuming after `last_event_id`.
pub async fn follow(server: &Server, query: &str, last_event_id: Option<i64>) -> reqwest::Response {
    let mut request = server.http.get(server.api(&format!("/events{query}")));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.expect("SSE");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    response
}

//! Issue 14: a job's command never runs beside itself, through crashes and restarts. Each
//! execution holds an exclusive `flock` on its job's lock file for its whole life and notes
//! when it started and ended; a second execution that finds the lock taken records an overlap.

use crate::helpers::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A command that takes its job's lock (recording an overlap when another execution holds
/// it), notes its pid in `dir/pids-{name}` and its start and end in `dir/runs-{name}`, and
/// sleeps `seconds` in between.
pub fn exclusive(dir: &Path, name: &str, seconds: f64) -> String {
    format!(
        "exec 9>>'{d}/lock-{name}'; flock -n 9 || echo \"{name} $(date +%s%N)\" >> '{d}/overlaps'; \
         echo $$ >> '{d}/pids-{name}'; \
         echo \"start $(date +%s%N)\" >> '{d}/runs-{name}'; sleep {seconds}; \
         echo \"end $(date +%s%N)\" >> '{d}/runs-{name}'",
        d = dir.display()
    )
}

/// The overlaps recorded in `dir`, one line each.
pub fn overlaps(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("overlaps"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Executions of `name` that started, and the (start, end) of those that ended.
pub fn runs(dir: &Path, name: &str) -> (usize, Vec<(u128, u128)>) {
    let text = std::fs::read_to_string(dir.join(format!("runs-{name}"))).unwrap_or_default();
    let mut started = 0;
    let mut ended = Vec::new();
    let mut open = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("start", t)) => {
                started += 1;
                open = t.parse().ok();
            }
            Some(("end", t)) => {
                if let (Some(s), Ok(e)) = (open.take(), t.parse()) {
                    ended.push((s, e));
                }
            }
            _ => {}
        }
    }
    (started, ended)
}

/// Waits until the server's log has a line with all of `needles` after byte `from`;
/// returns where that line ends.
pub fn wait_log(server: &Server, from: usize, needles: &[&str], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let log = server.log();
        if let Some(tail) = log.get(from..) {
            let mut at = from;
            for line in tail.split_inclusive('\n') {
                at += line.len();
                if line.ends_with('\n') && needles.iter().all(|n| line.contains(n)) {
                    return at;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} in {timeout:?}"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_sigkill_just_after_an_attempt_starts_never_runs_a_job_twice_at_once() {
    let mut server = Server::start(&["--concurrency", "8"]).await;
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut ids = Vec::new();
    for round in 0..30 {
        let name = round.to_string();
        let id = server
            .submit(
                &["sh", "-c", &exclusive(work.path(), &name, 0.3)],
                json!({ "policy": fast_policy(10) }),
            )
            .await;
        // Killed 0–5 ms after the attempt started, while its command is being recorded.
        wait_log(
            &server,
            0,
            &["attempt started", &id],
            Duration::from_secs(20),
        );
        let delay = Duration::from_micros(rand::random_range(0..=5_000));
        std::thread::sleep(delay);
        server.kill9();
        server.restart().await;
        // Each job meets one kill: the next round starts once it is over.
        let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
        assert_eq!(job["state"], "succeeded", "round {round}: {job}");
        ids.push(id);
    }
    assert_eq!(
        overlaps(work.path()),
        Vec::<String>::new(),
        "no job ran beside itself"
    );
    let mut executions = 0;
    for round in 0..30 {
        let (count, mut ended) = runs(work.path(), &round.to_string());
        executions += count;
        ended.sort();
        assert!(
            ended.windows(2).all(|w| w[0].1 <= w[1].0),
            "round {round}: finished executions overlap: {ended:?}"
        );
    }
    eprintln!(
        "30 rounds of SIGKILL 0-5 ms after an attempt started: {executions} executions, 0 overlaps, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The pids of the executions of `name` so far.
fn pids(dir: &Path, name: &str) -> Vec<u32> {
    std::fs::read_to_string(dir.join(format!("pids-{name}")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` runs (a zombie does not: it has ended and waits to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat
                .rfind(')')
                .map(|i| stat[i + 1..].trim_start().to_owned())?;
            after.chars().next()
        })
        .is_some_and(|state| state != 'Z')
}

/// Waits for the first execution of `name` to have started; returns its pid.
async fn first_pid(dir: &Path, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = pids(dir, name).first() {
            return *pid;
        }
        assert!(Instant::now() < deadline, "{name} never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The instant of the first line of the server's log with `message`.
async fn logged_at(server: &Server, message: &str, timeout: Duration) -> DateTime<Utc> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = server
            .log()
            .lines()
            .filter(|l| l.contains(message))
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["timestamp"].as_str().and_then(|t| t.parse().ok()));
        if let Some(at) = found {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "no \"{message}\" in {timeout:?}; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn node(database: &str, name: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--node", name];
    args.extend_from_slice(extra);
    Server::start_node(&format!("{database}?application_name={name}"), &args).await
}

async fn postgres(sql: &str, database: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.execute(sql, &[]).await.expect(sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_node_that_learns_it_lost_a_lease_stops_the_command_within_a_second() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let n1 = node(&database, "n1", &["--lease", "3s"]).await;
    let work = tempfile::tempdir().unwrap();
    let id = n1
        .submit(
            &["sh", "-c", &exclusive(work.path(), "job", 30.0)],
            json!({ "policy": fast_policy(3) }),
        )
        .await;
    let pid = first_pid(work.path(), "job").await;
    // The attempt is taken from n1 behind its back, as a rescue by another node would.
    let fenced = postgres(
        &format!("UPDATE jobs SET lease_owner = 'elsewhere' WHERE id = '{id}'"),
        &database,
    )
    .await;
    assert_eq!(fenced, 1);
    let learned = logged_at(
        &n1,
        "no longer holds the attempt's lease",
        Duration::from_secs(5),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the command still runs");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped_after = (Utc::now() - learned).num_milliseconds();
    eprintln!("n1 learned the fence and its command was gone {stopped_after} ms later");
    assert!(
        stopped_after < 1_000,
        "stopped {stopped_after} ms after learning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_frozen_node_rescued_by_another_never_overlaps_and_stops_on_resume() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let n1 = node(&database, "n1", &["--lease", "2s", "--concurrency", "2"]).await;
    let work = tempfile::tempdir().unwrap();
    let names = ["a", "b"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(
            n1.submit(
                &["sh", "-c", &exclusive(work.path(), name, 6.0)],
                json!({ "policy": fast_policy(3) }),
            )
            .await,
        );
    }
    let mut first = Vec::new();
    for name in names {
        first.push(first_pid(work.path(), name).await);
    }
    // n2 joins once n1 runs both: n1 is frozen past its lease, n2 rescues and runs them.
    let n2 = node(&database, "n2", &["--lease", "2s", "--concurrency", "2"]).await;
    let frozen = nix::unistd::Pid::from_raw(n1.pid().unwrap());
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while names.iter().any(|n| pids(work.path(), n).len() < 2) {
        assert!(Instant::now() < deadline, "n2 never ran the rescued jobs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nix::sys::signal::kill(frozen, nix::sys::signal::Signal::SIGCONT).unwrap();
    // n1 learns the fence from its first renewal ("no longer holds the attempt's lease") or,
    // when its commands, stopped by n2, ended first, from the refusal of their results ("no
    // longer holds its lease"): whichever comes first after the resume.
    let learned = logged_at(&n1, "no longer holds", Duration::from_secs(5)).await;
    for (pid, name) in first.iter().zip(names) {
        assert!(
            !alive(*pid),
            "{name}: n1's command was stopped before the rescue ran it again"
        );
    }
    for id in &ids {
        let job = n2.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = n2.attempts(id).await;
        assert_eq!(attempts[0]["outcome"], "lost", "{attempts:?}");
    }
    assert_eq!(
        overlaps(work.path()),
        Vec::<String>::new(),
        "no job ran beside itself"
    );
    eprintln!(
        "n1 frozen past its 2 s lease: n2 stopped its commands before running the jobs again; n1 learned the fence at {learned}; 0 overlaps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_node_restarted_under_its_name_stops_its_old_commands_before_running_again() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    // A long lease: the job runs again at once only because the restarted node knows its
    // own leftovers, not because the lease expired.
    let mut n1 = node(&database, "n1", &["--lease", "60s"]).await;
    let work = tempfile::tempdir().unwrap();
    let id = n1
        .submit(
            &["sh", "-c", &exclusive(work.path(), "job", 2.0)],
            json!({ "policy": fast_policy(3) }),
        )
        .await;
    let old = first_pid(work.path(), "job").await;
    n1.kill9();
    assert!(alive(old), "the command outlives its killed node");
    let restarted = Instant::now();
    n1.restart().await;
    let job = n1.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let attempts = n1.attempts(&id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "lost");
    assert!(!alive(old));
    assert_eq!(
        overlaps(work.path()),
        Vec::<String>::new(),
        "no job ran beside itself"
    );
    let (started, ended) = runs(work.path(), "job");
    assert_eq!(
        (started, ended.len()),
        (2, 1),
        "the old run was stopped, the new one finished"
    );
    eprintln!(
        "restarted under its name: old command stopped, job done {:.1} s after the restart (lease 60 s)",
        restarted.elapsed().as_secs_f64()
    );
}

/// A PostgreSQL server of this test's own (initdb in a temporary folder, a free port), so
/// that it can be stopped without disturbing the shared one. Run as the `postgres` user,
/// since PostgreSQL refuses root. Stopped when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let server = PrivatePostgres::init();
        server.up();
        server
    }

    /// A data folder and a port, the server not started yet.
    fn init() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let chown = std::process::Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(chown.success(), "the postgres user owns the folder");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let server = PrivatePostgres { dir, port };
        server.pg(&[
            "initdb",
            "-D",
            &server.data(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg(&self, args: &[&str]) {
        let (program, rest) = args.split_first().unwrap();
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")])
            .args(rest)
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.pg(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &options,
            "-l",
            &log,
            "-w",
            "start",
        ]);
    }

    fn down(&self) {
        self.pg(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_postgres_down_for_two_leases_neither_reruns_nor_loses_results() {
    let postgres = PrivatePostgres::start();
    let lease = Duration::from_secs(3);
    let args = ["--lease", "3s", "--concurrency", "2"];
    let n1 = node(&postgres.url(), "n1", &args).await;
    let n2 = node(&postgres.url(), "n2", &args).await;
    let work = tempfile::tempdir().unwrap();
    // Two finish during the outage, two after it.
    let jobs = [
        ("short-1", 4.0),
        ("short-2", 4.0),
        ("long-1", 20.0),
        ("long-2", 20.0),
    ];
    let mut ids = Vec::new();
    for (i, (name, seconds)) in jobs.iter().enumerate() {
        let via = if i % 2 == 0 { &n1 } else { &n2 };
        ids.push(
            via.submit(
                &["sh", "-c", &exclusive(work.path(), name, *seconds)],
                json!({ "policy": fast_policy(3) }),
            )
            .await,
        );
    }
    for (name, _) in jobs {
        first_pid(work.path(), name).await;
    }
    postgres.down();
    tokio::time::sleep(lease * 2).await;
    let (short_done, _) = runs(work.path(), "short-1");
    assert_eq!(short_done, 1);
    assert_eq!(
        runs(work.path(), "short-1").1.len() + runs(work.path(), "short-2").1.len(),
        2,
        "the short attempts finished during the outage"
    );
    postgres.up();
    // A node that joins as the database returns sees every lease expired: it must give
    // their nodes the time to renew them before it judges them lost.
    let n3 = node(&postgres.url(), "n3", &args).await;
    for (id, (name, _)) in ids.iter().zip(jobs) {
        let job = n1.wait_terminal(id, Duration::from_secs(40)).await;
        assert_eq!(job["state"], "succeeded", "{name}: {job}");
        let attempts = n1.attempts(id).await;
        assert_eq!(
            attempts.len(),
            1,
            "{name}: one attempt, its result kept: {attempts:?}"
        );
        assert_eq!(attempts[0]["outcome"], "succeeded");
        let (started, _) = runs(work.path(), name);
        assert_eq!(started, 1, "{name} ran once");
    }
    assert_eq!(
        overlaps(work.path()),
        Vec::<String>::new(),
        "no job ran beside itself"
    );
    for n in [&n1, &n2, &n3] {
        assert!(!n.log().contains("rescued a lost attempt"), "{}", n.log());
    }
    eprintln!(
        "PostgreSQL down for 2 leases, a third node joining as it returned: 4 attempts, 2 finished during the outage, all recorded once, 0 reruns, 0 overlaps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_crash_loop_does_not_fail_jobs_that_only_fail_transiently() {
    let mut server = Server::start(&["--concurrency", "16"]).await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 3, "initial_delay": "50ms", "max_delay": "200ms", "jitter": "none" });
    let mut ids = Vec::new();
    for i in 0..10 {
        // Fails twice, then succeeds: exactly max_attempts. Only a run that gets to its end
        // counts as a failure, so a run killed with the server changes nothing.
        let counter = work.path().join(format!("failures-{i}"));
        let script = format!(
            "sleep 0.6; n=$(cat '{c}' 2>/dev/null || echo 0); \
             if [ $n -lt 2 ]; then echo $((n+1)) > '{c}'; echo 'connection reset by peer' >&2; exit 1; fi; echo done",
            c = counter.display()
        );
        ids.push(
            server
                .submit(&["sh", "-c", &script], json!({ "policy": policy }))
                .await,
        );
    }
    // SIGKILL and restart twice, each time while attempts are running (a kill between
    // attempts would cost nothing and prove nothing). All ten jobs run at once, so each kill
    // costs every one of them an attempt; a third kill in a row would make them poison by
    // the default `max_lost_attempts` of 3 (that case is the poison test's).
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, running) = server.get("/jobs?state=running&limit=20").await;
            if running["jobs"]
                .as_array()
                .is_some_and(|jobs| !jobs.is_empty())
            {
                break;
            }
            assert!(Instant::now() < deadline, "no attempt started: {running}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.kill9();
        server.restart().await;
    }
    let mut lost = 0;
    for id in &ids {
        let job = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = server.attempts(id).await;
        lost += attempts.iter().filter(|a| a["outcome"] == "lost").count();
        let failed = attempts.iter().filter(|a| a["outcome"] == "failed").count();
        assert_eq!(failed, 2, "{attempts:?}");
    }
    assert!(lost >= 2, "the crashes cost attempts: {lost}");
    eprintln!(
        "crash loop (2 SIGKILLs while running): 10 jobs of max_attempts 3 all succeeded after 2 failures each, {lost} attempts lost on top"
    );
}

/// `retryd serve` on `database`, its log in `dir/server.log`; the lines it prints on stdout
/// arrive on the returned channel. Killed by the caller.
fn serve_raw(
    dir: &Path,
    database: &str,
    node: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--database", database, "--node", node])
        .env_remove("RETRYD_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn retryd serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}: {}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_a_node_waits_for_postgres_says_why_and_names_its_connections() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("server.log");

    let (mut lost, _) = serve_raw(
        work.path(),
        "postgres://postgres@no-such-host.invalid:5432/postgres",
        "n1",
    );
    wait_file_contains(&log, "did not resolve", Duration::from_secs(20));
    assert!(
        lost.try_wait().unwrap().is_none(),
        "the node waits instead of exiting"
    );
    lost.kill().unwrap();
    lost.wait().unwrap();

    let postgres = PrivatePostgres::init();
    let (mut waiting, printed) = serve_raw(work.path(), &postgres.url(), "n1");
    wait_file_contains(&log, "refused the connection", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the node waits instead of exiting"
    );
    postgres.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match printed.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("listening on") => break,
            _ => assert!(
                Instant::now() < deadline,
                "the node never came up with its database"
            ),
        }
    }
    let (client, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let named: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'retryd:n1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(named >= 1, "the node's connections carry its name");
    waiting.kill().unwrap();
    waiting.wait().unwrap();
}

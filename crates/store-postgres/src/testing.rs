//! Fresh databases for tests: each test gets its own, named after the process that made
//! it, and databases left by processes that are gone are dropped on the way.

use std::str::FromStr;
use tokio_postgres::NoTls;

/// Where tests find PostgreSQL: `RETRYD_TEST_DATABASE_URL`, else the local server.
pub fn admin_url() -> String {
    std::env::var("RETRYD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

const PREFIX: &str = "retryd_test_";

/// A plain connection to `url`, for a test that writes beside the store (another node's
/// transaction, a raw row).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Creates an empty database and returns its URL. Panics, loudly, when PostgreSQL cannot be
/// reached: a test that needs it must fail, not skip.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, NoTls).await.unwrap_or_else(|e| {
        panic!("cannot reach PostgreSQL at {admin}: {e}. Start it (scripts/test.sh does) or set RETRYD_TEST_DATABASE_URL.")
    });
    tokio::spawn(connection);
    let stale = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'retryd_test_%'",
            &[],
        )
        .await
        .expect("list databases");
    for row in stale {
        let name: String = row.get(0);
        let pid = name
            .trim_start_matches(PREFIX)
            .split('_')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
    let name = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create test database");
    let mut config = tokio_postgres::Config::from_str(&admin).expect("admin URL");
    config.dbname(&name);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let host = admin
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    format!("postgres://{user}@{host}/{name}")
}

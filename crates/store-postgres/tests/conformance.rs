//! The shared storage conformance suite, unchanged, on a fresh PostgreSQL database per test.

use retryd_store::conformance::DynStore;
use retryd_store_postgres::PostgresStore;
use std::sync::Arc;

async fn fresh_store() -> DynStore {
    let url = retryd_store_postgres::testing::fresh_database().await;
    Arc::new(
        PostgresStore::connect(&url)
            .await
            .expect("connect to the test database"),
    )
}

retryd_store::conformance_tests!(fresh_store());

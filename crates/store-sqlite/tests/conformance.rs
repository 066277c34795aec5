//! The shared storage conformance suite, on a fresh SQLite file per test.

use retryd_store::conformance::DynStore;
use retryd_store_sqlite::{SqliteStore, Synchronous};
use std::sync::Arc;

async fn fresh_store() -> DynStore {
    // The directory outlives the test on purpose: leaking it keeps the file open-able
    // for the whole test without threading a guard through the macro.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(
        SqliteStore::open(dir.join("conformance.db"), Synchronous::Normal).expect("open store"),
    )
}

retryd_store::conformance_tests!(fresh_store());

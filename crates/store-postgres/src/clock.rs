//! The database's clock as seen from a node: the local clock plus a measured offset, so that
//! a node whose own clock is minutes off neither steals live leases nor runs retries early.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use retryd_core::Clock;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How often the offset is measured again.
const REMEASURE_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct DbClock {
    /// Database time minus local time, in microseconds. Atomic: read on every clock call.
    offset_us: Arc<AtomicI64>,
}

impl DbClock {
    pub(crate) async fn measure(pool: &Pool) -> retryd_store::Result<Self> {
        let clock = DbClock {
            offset_us: Arc::new(AtomicI64::new(0)),
        };
        clock
            .offset_us
            .store(offset(pool).await?, Ordering::Relaxed);
        Ok(clock)
    }

    pub(crate) fn keep_measuring(&self, pool: Pool) {
        let offset_us = self.offset_us.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REMEASURE_EVERY).await;
                if let Ok(measured) = offset(&pool).await {
                    offset_us.store(measured, Ordering::Relaxed);
                }
            }
        });
    }

    /// Database time minus local time.
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.offset_us.load(Ordering::Relaxed))
    }
}

/// One round trip; the database's reading is taken to be at its midpoint.
async fn offset(pool: &Pool) -> retryd_store::Result<i64> {
    let client = pool
        .get()
        .await
        .map_err(|e| retryd_store::Error::Backend(e.to_string()))?;
    let before = Utc::now();
    let row = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(|e| retryd_store::Error::Backend(e.to_string()))?;
    let after = Utc::now();
    let db: DateTime<Utc> = row.get(0);
    let local = before + (after - before) / 2;
    Ok((db - local).num_microseconds().unwrap_or(0))
}

impl Clock for DbClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }
}

//! The deadline sweep: waiting jobs past their deadline become `expired`.

use crate::Engine;
use chrono::{DateTime, Utc};

pub(crate) async fn expire(engine: &Engine, now: DateTime<Utc>) -> retryd_store::Result<()> {
    for (_, event) in engine.inner.store.expire_jobs(now).await? {
        engine.publish(event);
    }
    Ok(())
}

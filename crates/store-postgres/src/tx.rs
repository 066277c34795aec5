//! Transactions in two round trips: BEGIN travels with the first statement, COMMIT with the
//! last writes. A claim or a group of results is on every job's path, and each round trip
//! is a wait on a busy machine.
//!
//! Statements are prepared (from the connection's cache) before they are sent together:
//! tokio-postgres sends pipelined requests in the order they are first polled, and an
//! unprepared statement would first wait for its Parse and so fall behind a COMMIT sent
//! with it.

use crate::pg;
use retryd_store::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// An open transaction on a pooled connection. Left without [`Tx::commit`] (an error after
/// rows were locked, a dropped future), its connection is closed instead of going back to
/// the pool, and the server rolls the transaction back: no lock outlives a failure.
pub(crate) struct Tx {
    client: Option<deadpool_postgres::Object>,
    committed: AtomicBool,
}

impl Tx {
    /// BEGIN and `sql`, in one round trip; returns the transaction and the rows.
    pub async fn begin_with(
        client: deadpool_postgres::Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<(Tx, Vec<Row>)> {
        let (tx, rows, _) = Self::begin_with_also(client, sql, params, None).await?;
        Ok((tx, rows))
    }

    /// BEGIN, `sql` and `also` (when given), in one round trip; returns the transaction and
    /// the rows of each.
    pub async fn begin_with_also(
        client: deadpool_postgres::Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        also: Option<(&str, &[&(dyn ToSql + Sync)])>,
    ) -> Result<(Tx, Vec<Row>, Vec<Row>)> {
        let statement = client.prepare_cached(sql).await.map_err(pg)?;
        let also = match also {
            Some((sql, params)) => Some((client.prepare_cached(sql).await.map_err(pg)?, params)),
            None => None,
        };
        let tx = Tx {
            client: Some(client),
            committed: AtomicBool::new(false),
        };
        let also_rows = async {
            match &also {
                Some((statement, params)) => tx.client().query(statement, params).await,
                None => Ok(Vec::new()),
            }
        };
        let (_, rows, also_rows) = futures::try_join!(
            tx.client().batch_execute("BEGIN"),
            tx.client().query(&statement, params),
            also_rows,
        )
        .map_err(pg)?;
        Ok((tx, rows, also_rows))
    }

    pub fn client(&self) -> &deadpool_postgres::Client {
        self.client.as_ref().expect("open until dropped")
    }

    /// A statement from the connection's cache, ready to be sent with others.
    pub async fn prepare(&self, sql: &str) -> Result<Statement> {
        self.client().prepare_cached(sql).await.map_err(pg)
    }

    /// Sends COMMIT; join it after the last writes (prepared with [`Tx::prepare`]) so that it
    /// travels with them. A write that fails aborts the transaction, and the COMMIT then
    /// only ends it: nothing of it is kept.
    pub async fn commit(&self) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute("COMMIT").await?;
        self.committed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.committed.load(Ordering::SeqCst)
            && let Some(client) = self.client.take()
        {
            // Out of the pool and closed: the server ends the transaction and its locks.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

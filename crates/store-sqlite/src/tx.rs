//! The one writer: writes queue up and commit in groups, one transaction (and one fsync)
//! for many (see [`retryd_store::group`]).

use super::*;

/// A queued write: runs inside its savepoint and returns its value type-erased.
pub(crate) type WriteOp = Box<dyn FnOnce(&Connection) -> Result<Box<dyn Any + Send>> + Send>;

pub(crate) type WriteReply = tokio::sync::oneshot::Sender<Result<Box<dyn Any + Send>>>;

pub(crate) type WriteQueue = Arc<GroupQueue<Queued>>;

/// A write waiting for its group commit.
pub(crate) struct Queued {
    pub(crate) op: WriteOp,
    pub(crate) reply: WriteReply,
    /// False for a write whose loss on power failure only repeats work (a claim): a group of
    /// such writes alone commits without fsync.
    pub(crate) durable: bool,
    /// False for a write that checks all it may refuse before it writes (a result): it runs
    /// without a savepoint of its own (see [`commit_in_one_transaction`]).
    pub(crate) savepoint: bool,
}

/// Commits every queued write as one transaction, group after group until none is queued:
/// the one committer of [`GroupQueue`].
///
/// A group of claims only commits at `synchronous=NORMAL`: in WAL mode that commit survives
/// a process crash, and the next durable commit's fsync covers it too, so power loss can
/// only take the newest claims, whose jobs are then claimed and run again (at least once,
/// as on PostgreSQL, where claims commit asynchronously). A retry's claim thus never waits
/// for a disk flush of its own.
pub(crate) fn commit_groups(
    conn: &Mutex<Connection>,
    queue: &GroupQueue<Queued>,
    synchronous: Synchronous,
) {
    let _role = queue.role();
    loop {
        commit_group(conn, queue.take(), synchronous);
        if !queue.keep_committing() {
            return;
        }
    }
}

pub(crate) fn commit_group(conn: &Mutex<Connection>, group: Vec<Queued>, synchronous: Synchronous) {
    if group.is_empty() {
        return;
    }
    let Ok(mut conn) = conn.lock() else {
        for queued in group {
            let _ = queued
                .reply
                .send(Err(backend("writer connection poisoned")));
        }
        return;
    };
    // Set before every group rather than restored after one: a failed restore cannot leave
    // durable writes unflushed.
    if synchronous == Synchronous::Full {
        let relaxed = group.iter().all(|q| !q.durable);
        let level = if relaxed {
            Synchronous::Normal
        } else {
            Synchronous::Full
        };
        if let Err(e) = conn.execute_batch(level.pragma()) {
            let message = e.to_string();
            for queued in group {
                let _ = queued.reply.send(Err(backend(&message)));
            }
            return;
        }
    }
    commit_in_one_transaction(&mut conn, group);
}

/// Runs the group's writes in one transaction and commits it, answering each write.
///
/// Each write runs in a savepoint, so that one that fails is undone alone; except writes
/// queued without one (results, most of a drain's writes): SQLite copies every page a
/// savepoint changes into its statement journal, and that copying was a sixth of a drain's
/// time. Such a write that fails after it changed rows leaves them half done: then the whole
/// transaction is rolled back, the writes that ran are answered with the failure, and those
/// not run yet go into another transaction. One that fails before it wrote is answered alone.
pub(crate) fn commit_in_one_transaction(conn: &mut Connection, group: Vec<Queued>) {
    let mut left = group;
    while !left.is_empty() {
        left = commit_writes(conn, left);
    }
}

/// One transaction of [`commit_in_one_transaction`]: returns the writes it did not run.
fn commit_writes(conn: &mut Connection, group: Vec<Queued>) -> Vec<Queued> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for queued in group {
                let _ = queued.reply.send(Err(backend(&message)));
            }
            return Vec::new();
        }
    };
    let mut replies = Vec::with_capacity(group.len());
    let mut writes = group.into_iter();
    let mut half_done = None;
    for Queued {
        op,
        reply,
        savepoint,
        ..
    } in writes.by_ref()
    {
        if tx.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full): nothing of
            // this group is written, and no later write may run outside a transaction.
            let _ = reply.send(Err(backend("the group's transaction was rolled back")));
            continue;
        }
        if !savepoint {
            let before = tx.total_changes();
            match op(&tx) {
                Err(failure) if tx.total_changes() != before => {
                    half_done = Some((reply, failure.to_string(), failure));
                    break;
                }
                result => replies.push((reply, result)),
            }
            continue;
        }
        let result = match exec(&tx, "SAVEPOINT w", []) {
            Ok(_) => {
                let result = op(&tx);
                let undo = if result.is_ok() {
                    Ok(0)
                } else {
                    exec(&tx, "ROLLBACK TO w", [])
                };
                match undo.and_then(|_| exec(&tx, "RELEASE w", [])) {
                    Ok(_) => result,
                    Err(e) => Err(backend(e)),
                }
            }
            Err(e) => Err(backend(e)),
        };
        replies.push((reply, result));
    }
    if let Some((reply, message, failure)) = half_done {
        drop(tx);
        let _ = reply.send(Err(failure));
        for (reply, _) in replies {
            let _ = reply.send(Err(backend(format!(
                "rolled back with another write of its group that failed: {message}"
            ))));
        }
        return writes.collect();
    }
    let rolled_back = tx.is_autocommit();
    match tx.commit() {
        Ok(()) if rolled_back => {
            for (reply, _) in replies {
                let _ = reply.send(Err(backend("the group's transaction was rolled back")));
            }
        }
        Ok(()) => {
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, _) in replies {
                let _ = reply.send(Err(backend(&message)));
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that inserts `name`, then fails with `fail` if given.
    fn insert(
        name: &'static str,
        fail: Option<&'static str>,
        savepoint: bool,
    ) -> (
        Queued,
        tokio::sync::oneshot::Receiver<Result<Box<dyn Any + Send>>>,
    ) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op: WriteOp = Box::new(move |conn| {
            exec(conn, "INSERT INTO t (name) VALUES (?1)", [name]).map_err(backend)?;
            match fail {
                Some(message) => Err(backend(message)),
                None => Ok(Box::new(()) as Box<dyn Any + Send>),
            }
        });
        let queued = Queued {
            op,
            reply,
            durable: true,
            savepoint,
        };
        (queued, rx)
    }

    /// A write without a savepoint that refuses before it writes.
    fn refuse() -> (
        Queued,
        tokio::sync::oneshot::Receiver<Result<Box<dyn Any + Send>>>,
    ) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op: WriteOp = Box::new(|_| {
            Err(Error::LeaseLost {
                job_id: JobId(uuid::Uuid::nil()),
                attempt_id: 7,
            })
        });
        let queued = Queued {
            op,
            reply,
            durable: true,
            savepoint: false,
        };
        (queued, rx)
    }

    fn answer(mut rx: tokio::sync::oneshot::Receiver<Result<Box<dyn Any + Send>>>) -> Result<()> {
        rx.try_recv().expect("answered").map(|_| ())
    }

    fn names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT name FROM t ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_write_without_savepoint_that_fails_half_done_rolls_its_transaction_back_and_the_rest_commit_after()
     {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (name TEXT NOT NULL)")
            .unwrap();

        let (a, a_rx) = insert("a", None, true);
        let (b, b_rx) = insert("b", Some("disk on fire"), false);
        let (c, c_rx) = insert("c", None, true);
        let (d, d_rx) = insert("d", None, false);
        commit_in_one_transaction(&mut conn, vec![a, b, c, d]);
        let a = answer(a_rx).unwrap_err().to_string();
        assert!(
            a.contains("rolled back with another write of its group that failed")
                && a.contains("disk on fire"),
            "{a}"
        );
        assert!(
            answer(b_rx)
                .unwrap_err()
                .to_string()
                .contains("disk on fire")
        );
        answer(c_rx).expect("ran in the next transaction");
        answer(d_rx).expect("ran in the next transaction");
        assert_eq!(names(&conn), ["c", "d"], "nothing of a or b is kept");

        // A refusal before any write is answered alone; its group commits.
        let (e, e_rx) = insert("e", None, true);
        let (r, r_rx) = refuse();
        let (f, f_rx) = insert("f", Some("refused by its savepoint"), true);
        let (g, g_rx) = insert("g", None, false);
        commit_in_one_transaction(&mut conn, vec![e, r, f, g]);
        answer(e_rx).unwrap();
        assert!(matches!(answer(r_rx), Err(Error::LeaseLost { .. })));
        assert!(answer(f_rx).is_err(), "undone by its own savepoint");
        answer(g_rx).unwrap();
        assert_eq!(names(&conn), ["c", "d", "e", "g"]);
    }
}

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

pub(crate) fn commit_in_one_transaction(conn: &mut Connection, group: Vec<Queued>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for queued in group {
                let _ = queued.reply.send(Err(backend(&message)));
            }
            return;
        }
    };
    let mut replies = Vec::with_capacity(group.len());
    for Queued { op, reply, .. } in group {
        if tx.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full): nothing of
            // this group is written, and no later write may run outside a transaction.
            let _ = reply.send(Err(backend("the group's transaction was rolled back")));
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
}

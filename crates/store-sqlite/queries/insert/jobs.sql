-- One new job of a batch (the batch is one transaction). The caller has checked that its
-- idempotency key, if any, is free in its organization's queue. OR FAIL: a single row needs
-- no statement journal (see the crate docs, "Statement journals").
INSERT OR FAIL INTO jobs (id, queue, kind, target, action, policy_name, policy, priority, run_at, deadline,
                  labels, idempotency_key, created_by, state, attempt, next_attempt_at, created_at, updated_at, org)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'pending', 0, ?9, ?14, ?14, ?15)

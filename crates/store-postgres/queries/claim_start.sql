-- Marks a batch of locked candidates running, one statement for the whole batch:
-- $1 ids, $2 attempt numbers, $3 attempt ids, $4 node, $5 lease end, $6 now.
UPDATE jobs SET state = 'running', attempt = t.number, lease_owner = $4, lease_expires_at = $5,
       current_attempt_id = t.attempt_id, next_attempt_at = NULL, hold_reason = NULL,
       started_at = COALESCE(started_at, $6), updated_at = $6
FROM unnest($1::uuid[], $2::int[], $3::bigint[]) AS t(job, number, attempt_id)
WHERE jobs.id = t.job
RETURNING {JOB_COLUMNS}

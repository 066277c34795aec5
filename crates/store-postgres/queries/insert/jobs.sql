-- A chunk of a batch of new jobs with idempotency keys in one statement, one array per
-- column (insert.rs: a batch without keys is streamed by COPY into the same columns). A job
-- whose key is already taken in its organization's queue (by a stored job, or by an earlier
-- job of this batch) is not inserted, and the caller looks the owner of the key up instead.
-- The caller knows the rows it stored (rows::stored_job). $7: each job's policy snapshot
-- (policies.rs).
INSERT INTO jobs (id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
                  labels, idempotency_key, created_by, state, attempt, next_attempt_at, created_at, updated_at, org)
SELECT id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
       labels, idempotency_key, created_by, 'pending', 0, run_at, created_at, created_at, org
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::bigint[],
            $8::int[], $9::timestamptz[], $10::timestamptz[], $11::jsonb[], $12::text[], $13::text[],
            $14::timestamptz[], $15::text[])
     AS t(id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
          labels, idempotency_key, created_by, created_at, org)
ON CONFLICT (org, queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id

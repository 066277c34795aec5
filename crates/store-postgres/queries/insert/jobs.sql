-- A chunk of a batch of new jobs in one statement, one array per column. For a chunk with
-- idempotency keys, `insert.rs` appends `ON CONFLICT … DO NOTHING RETURNING id`: a job whose key
-- is already taken in its organization's queue (by a stored job, or by an earlier job of this
-- batch) is not inserted, and the caller looks the owner of the key up instead. A chunk
-- without keys is inserted as it stands: ON CONFLICT made every row a speculative insertion
-- (an arbiter check and an extra WAL record a row), although a job without a key can conflict
-- with none. The caller knows the rows it stored (rows::stored_job). $7: each job's policy
-- snapshot (policies.rs).
INSERT INTO jobs (id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
                  labels, idempotency_key, created_by, state, attempt, next_attempt_at, created_at, updated_at, org)
SELECT id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
       labels, idempotency_key, created_by, 'pending', 0, run_at, created_at, created_at, org
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::bigint[],
            $8::int[], $9::timestamptz[], $10::timestamptz[], $11::jsonb[], $12::text[], $13::text[],
            $14::timestamptz[], $15::text[])
     AS t(id, queue, kind, target, action, policy_name, policy_id, priority, run_at, deadline,
          labels, idempotency_key, created_by, created_at, org)

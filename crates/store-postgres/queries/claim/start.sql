-- Opens the attempts of a batch of locked candidates and marks them running, one statement
-- for the whole batch: $1 ids, $2 attempt numbers, $3 node, $4 now, $5 steps, $6 targets,
-- $7 lease end, $8 when each attempt starts (its due time if claimed ahead of it, else now).
-- Answers each job's id and its attempt's: the job as updated is derived from the candidate
-- (`ClaimRow::started`), not read back.
WITH opened AS (
    INSERT INTO attempts (job_id, number, step, node, started_at, target)
    SELECT job, number, step, $3, start, target
    FROM unnest($1::uuid[], $2::int[], $5::text[], $6::text[], $8::timestamptz[]) AS t(job, number, step, target, start)
    RETURNING job_id AS opened_job, id AS opened_id, number AS opened_number, started_at AS opened_start
)
UPDATE jobs SET state = 'running', attempt = opened_number, lease_owner = $3, lease_expires_at = $7,
       current_attempt_id = opened_id, next_attempt_at = NULL, hold_reason = NULL,
       started_at = COALESCE(started_at, opened_start), updated_at = $4
FROM opened
WHERE jobs.id = opened_job
RETURNING jobs.id, opened_id

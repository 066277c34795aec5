-- Due waiting jobs a worker would claim before this one in its organization's queue (the
-- claim's order: jobs_claim's key, below this job's).
SELECT COUNT(*) FROM jobs
WHERE org = $6 AND queue = $1 AND state IN ('pending', 'retrying') AND next_attempt_at <= $2
  AND ((-priority), next_attempt_at, id) < (-$3::int, $4::timestamptz, $5::uuid)

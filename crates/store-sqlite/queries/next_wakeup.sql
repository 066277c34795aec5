-- When something is next due: a waiting job, a deadline, a lease expiry.
SELECT
    (SELECT MIN(next_attempt_at) FROM jobs
      WHERE state IN ('pending', 'retrying') AND queue NOT IN (SELECT value FROM json_each(?1))),
    (SELECT MIN(deadline) FROM jobs WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL),
    (SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running')

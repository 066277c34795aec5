-- The earliest instant anything is due: a waiting job, a deadline, a lease expiry.
SELECT MIN(t) FROM (
    SELECT MIN(next_attempt_at) AS t FROM jobs
     WHERE state IN ('pending', 'retrying') AND queue NOT IN (SELECT value FROM json_each(?1))
    UNION ALL
    SELECT MIN(deadline) FROM jobs WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL
    UNION ALL
    SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running'
)

-- When something is next due: a waiting job this node can run (?2: handler kinds, ?3:
-- built-in actions), a deadline, a lease expiry. Each through its partial index (INDEXED BY:
-- without statistics the planner would read every job of the state through jobs_list).
SELECT
    -- In due order, stopping at the first match: MIN() over the filter reads them all.
    (SELECT next_attempt_at FROM jobs INDEXED BY jobs_due
      WHERE state IN ('pending', 'retrying') AND queue NOT IN (SELECT value FROM json_each(?1))
        AND (org, queue) NOT IN (SELECT org, name FROM queues WHERE paused)
        AND CASE WHEN json_extract(action, '$.type') = 'handler'
                 THEN kind IN (SELECT value FROM json_each(?2)) ELSE ?3 END
      ORDER BY next_attempt_at LIMIT 1),
    (SELECT MIN(deadline) FROM jobs INDEXED BY jobs_deadline
      WHERE deadline IS NOT NULL AND state IN ('pending', 'retrying')),
    (SELECT MIN(lease_expires_at) FROM jobs INDEXED BY jobs_lease WHERE state = 'running')

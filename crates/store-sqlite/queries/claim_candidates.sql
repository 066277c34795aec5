-- Due jobs by priority, then due time, outside paused or full queues.
SELECT {JOB_COLUMNS} FROM jobs
WHERE state IN ('pending', 'retrying')
  AND next_attempt_at <= ?1
  AND (deadline IS NULL OR deadline > ?1)
  AND queue NOT IN (SELECT value FROM json_each(?2))
ORDER BY priority DESC, next_attempt_at, id
LIMIT ?3

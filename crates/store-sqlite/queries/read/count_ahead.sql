-- Due waiting jobs a worker would claim before this one in its organization's queue.
SELECT COUNT(*) FROM jobs
WHERE org = ?6 AND queue = ?1 AND state IN ('pending', 'retrying') AND next_attempt_at <= ?2
  AND (priority > ?3 OR (priority = ?3 AND (next_attempt_at < ?4 OR (next_attempt_at = ?4 AND id < ?5))))

-- Due waiting jobs a worker would claim before this one in its queue.
SELECT COUNT(*) FROM jobs
WHERE queue = $1 AND state IN ('pending', 'retrying') AND next_attempt_at <= $2
  AND (priority > $3 OR (priority = $3 AND (next_attempt_at < $4 OR (next_attempt_at = $4 AND id < $5))))

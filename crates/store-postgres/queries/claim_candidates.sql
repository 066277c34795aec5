-- Jobs due by $6 (a little ahead of now, $1) this node can run ($4: registered handler
-- kinds, $5: built-in actions), by
-- priority, then due time, outside paused or full queues. The paused queues are read here
-- too, not only from the node's list: a pause holds from its commit on, on every node.
-- SKIP LOCKED: another
-- node's claim in flight is passed over, never waited for and never taken twice.
SELECT {JOB_COLUMNS} FROM jobs
WHERE state IN ('pending', 'retrying')
  AND next_attempt_at <= $6
  AND (deadline IS NULL OR deadline > $1)
  AND NOT (queue = ANY($2))
  AND queue NOT IN (SELECT name FROM queues WHERE paused)
  AND CASE WHEN action->>'type' = 'handler' THEN kind = ANY($4) ELSE $5 END
ORDER BY priority DESC, next_attempt_at, id
LIMIT $3
FOR UPDATE SKIP LOCKED

-- Jobs of organization ?7 due by ?6 (a little ahead of now, ?1) this node can run (?4:
-- registered handler kinds, ?5: built-in actions), by priority, then due time, outside
-- paused or full queues; ?3 at most (the organization's offer, see claim/orgs.sql). The
-- paused queues are read here too, not only from the node's list: a pause holds from its
-- commit on.
-- INDEXED BY: without statistics the planner takes jobs_list and sorts every waiting job;
-- the claim index (org first) yields them in order, so the scan stops at the limit.
SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_claim
WHERE org = ?7
  AND state IN ('pending', 'retrying')
  AND next_attempt_at <= ?6
  AND (deadline IS NULL OR deadline > ?1)
  AND queue NOT IN (SELECT value FROM json_each(?2))
  AND queue NOT IN (SELECT name FROM queues WHERE org = ?7 AND paused)
  AND CASE WHEN json_extract(action, '$.type') = 'handler'
           THEN kind IN (SELECT value FROM json_each(?4)) ELSE ?5 END
ORDER BY priority DESC, next_attempt_at, id
LIMIT ?3

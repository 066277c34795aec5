-- Newest or oldest first (JobFilter::in_order fills in the direction). A line ending in `-- ?n` is kept only when parameter n is given, one ending
-- in `-- !?n` only when it is not: SQLite plans a `?1 IS NULL OR …` condition without its
-- indexes (a full scan at a million jobs), so the store keeps just the lines that apply.
-- ?13 (the limit) is always bound: the highest number, so every parameter binds. A line
-- ending in `-- finished` is kept for a slice of a final state: it names the predicate of the
-- list indexes by queue, kind and target, which hold finished jobs only, so that the planner
-- may use them.
-- ?12 is a search: lowercase text looked for in the id, kind, queue, target, error, labels.
SELECT {JOB_COLUMNS} FROM jobs -- !?5
-- With a label, its index leads (CROSS JOIN fixes the loop order in SQLite) and gives the order.
SELECT {JOB_COLUMNS} FROM job_labels CROSS JOIN jobs ON jobs.id = job_labels.job_id -- ?5
WHERE 1
  AND job_labels.key = ?5 AND job_labels.value = ?6 -- ?5
  AND state IN (SELECT value FROM json_each(?1)) -- ?1
  AND state = ?10 -- ?10
  AND (state = 'succeeded' OR state = 'failed' OR state = 'cancelled' OR state = 'expired') -- finished
  -- A slice of finished jobs walks the index of one field and checks the others on the way:
  -- when another field has no job at all in the slice, the walk would read every job of
  -- the first one for nothing. One probe of each field's index skips such a slice.
  AND EXISTS (SELECT 1 FROM jobs f WHERE f.org = ?11 AND f.state = ?10 AND (f.state = 'succeeded' OR f.state = 'failed' OR f.state = 'cancelled' OR f.state = 'expired') AND f.queue = ?2) -- ?2 finished
  AND EXISTS (SELECT 1 FROM jobs f WHERE f.org = ?11 AND f.state = ?10 AND (f.state = 'succeeded' OR f.state = 'failed' OR f.state = 'cancelled' OR f.state = 'expired') AND f.kind = ?3) -- ?3 finished
  AND EXISTS (SELECT 1 FROM jobs f WHERE f.org = ?11 AND f.state = ?10 AND (f.state = 'succeeded' OR f.state = 'failed' OR f.state = 'cancelled' OR f.state = 'expired') AND f.target = ?4) -- ?4 finished
  AND queue = ?2 -- ?2
  AND kind = ?3 -- ?3
  AND target = ?4 -- ?4
  AND org = ?11 -- ?11
  AND (instr(jobs.id, ?12) > 0 OR instr(lower(kind), ?12) > 0 OR instr(lower(queue), ?12) > 0 OR instr(lower(COALESCE(target, '')), ?12) > 0 OR instr(lower(COALESCE(last_error, '')), ?12) > 0 OR instr(lower(labels), ?12) > 0) -- ?12
  AND created_at >= ?7 -- ?7
  AND created_at < ?8 -- ?8
  AND jobs.id {AFTER} ?9 -- ?9 !?5
  AND job_labels.job_id {AFTER} ?9 -- ?9 ?5
ORDER BY jobs.id {ORDER} -- !?5
ORDER BY job_labels.job_id {ORDER} -- ?5
LIMIT ?13

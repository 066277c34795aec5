-- Newest first; every filter is optional (NULL means "any").
SELECT {JOB_COLUMNS} FROM jobs
WHERE (?1 IS NULL OR state IN (SELECT value FROM json_each(?1)))
  AND (?2 IS NULL OR queue = ?2)
  AND (?3 IS NULL OR kind = ?3)
  AND (?4 IS NULL OR target = ?4)
  AND (?5 IS NULL OR EXISTS (SELECT 1 FROM json_each(jobs.labels) AS l WHERE l.key = ?5 AND l.value = ?6))
  AND (?7 IS NULL OR created_at >= ?7)
  AND (?8 IS NULL OR created_at < ?8)
  AND (?9 IS NULL OR id < ?9)
ORDER BY id DESC
LIMIT ?10

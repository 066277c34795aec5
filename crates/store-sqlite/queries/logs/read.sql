-- A job's log after sequence number ?2, at most ?3 lines: its rows, and the opening and
-- closing system lines its attempts' rows keep (rows::ResultLines), merged by sequence number.
SELECT seq, attempt, at, stream, line FROM log_lines WHERE job_id = ?1 AND seq > ?2
UNION ALL
SELECT opening_seq, number, opening_at, 'system', opening_line FROM attempts
WHERE job_id = ?1 AND opening_seq > ?2
UNION ALL
SELECT closing_seq, number, closing_at, 'system', closing_line FROM attempts
WHERE job_id = ?1 AND closing_seq > ?2
ORDER BY seq LIMIT ?3

-- The last $2 lines of a job's log (newest first), optionally only those containing $3
-- (lower case) or of attempt $4: its rows and the system lines its attempts' rows keep.
SELECT seq, attempt, at, stream, line FROM (
    SELECT seq, attempt, at, stream, line FROM log_lines WHERE job_id = $1
    UNION ALL
    SELECT opening_seq, number, opening_at, 'system', opening_line FROM attempts
    WHERE job_id = $1 AND opening_seq IS NOT NULL
    UNION ALL
    SELECT closing_seq, number, closing_at, 'system', closing_line FROM attempts
    WHERE job_id = $1 AND closing_seq IS NOT NULL
) AS l
WHERE ($3::text IS NULL OR strpos(lower(line), $3) > 0) AND ($4::int IS NULL OR attempt = $4)
ORDER BY seq DESC LIMIT $2

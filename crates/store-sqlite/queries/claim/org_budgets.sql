-- The retry budgets of the organizations named in ?1 (a JSON array; each has one): the cap,
-- and the retries (attempts after a job's first) of their jobs started after ?2 (the
-- window's start), with the oldest of them. The attempts of the window lead (CROSS JOIN
-- fixes the loop order): an organization's jobs of all time are never read.
SELECT o.name, o.retry_budget, COUNT(r.started_at), MIN(r.started_at)
FROM organizations o
LEFT JOIN (
    SELECT j.org AS org, a.started_at AS started_at
    FROM attempts a INDEXED BY attempts_started CROSS JOIN jobs j ON j.id = a.job_id
    WHERE a.started_at > ?2 AND a.number > 1
) r ON r.org = o.name
WHERE o.retry_budget IS NOT NULL AND o.name IN (SELECT value FROM json_each(?1))
GROUP BY o.name, o.retry_budget

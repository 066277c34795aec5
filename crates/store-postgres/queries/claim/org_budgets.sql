-- The retry budgets of the organizations named in $1 (each has one): the cap, and the
-- retries (attempts after a job's first) of their jobs started after $2 (the window's
-- start), with the oldest of them. The counts are read per organization, from the attempts
-- of the window (attempts_started): an organization's jobs of all time are never read.
SELECT o.name, o.retry_budget, r.retries, r.oldest
FROM organizations o
CROSS JOIN LATERAL (
    SELECT COUNT(*) AS retries, MIN(a.started_at) AS oldest
    FROM attempts a JOIN jobs j ON j.id = a.job_id
    WHERE a.started_at > $2 AND a.number > 1 AND j.org = o.name
) r
WHERE o.retry_budget IS NOT NULL AND o.name = ANY($1)

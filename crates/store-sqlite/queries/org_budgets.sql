-- The retry budgets of the organizations named in ?1 (a JSON array) that have one: the cap,
-- and the retries (attempts after a job's first) of their jobs started after ?2 (the
-- window's start), with the oldest of them. The counts are read per organization with a
-- budget, so a claim of organizations without one reads nothing more (reading the window's
-- attempts for every claim with a retry made retries start tens of milliseconds late). The
-- attempts of the window lead (CROSS JOIN fixes the loop order).
SELECT o.name, o.retry_budget,
    (SELECT COUNT(*) FROM attempts a INDEXED BY attempts_started CROSS JOIN jobs j ON j.id = a.job_id
     WHERE a.started_at > ?2 AND a.number > 1 AND j.org = o.name),
    (SELECT MIN(a.started_at) FROM attempts a INDEXED BY attempts_started CROSS JOIN jobs j ON j.id = a.job_id
     WHERE a.started_at > ?2 AND a.number > 1 AND j.org = o.name)
FROM organizations o
WHERE o.retry_budget IS NOT NULL AND o.name IN (SELECT value FROM json_each(?1))

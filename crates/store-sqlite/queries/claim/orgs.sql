-- How many candidates each organization offers a claim: ?1 (the window), or less when it
-- has a running limit (its attempts running on every node count).
SELECT o.name,
       CASE WHEN o.max_running IS NULL THEN ?1
            ELSE MAX(0, MIN(?1, o.max_running - (
                SELECT COUNT(*) FROM jobs r INDEXED BY jobs_lease
                WHERE r.state = 'running' AND r.org = o.name)))
       END
FROM organizations o
ORDER BY o.name

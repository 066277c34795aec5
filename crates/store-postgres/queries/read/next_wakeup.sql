-- When something is next due: a waiting job this node can run ($2: handler kinds, $3:
-- built-in actions), a deadline, a lease expiry.
SELECT
    (SELECT MIN(next_attempt_at) FROM jobs WHERE state IN ('pending', 'retrying') AND NOT (queue = ANY($1))
        AND (org, queue) NOT IN (SELECT org, name FROM queues WHERE paused)
        AND CASE WHEN action->>'type' = 'handler' THEN kind = ANY($2) ELSE $3 END),
    (SELECT MIN(deadline) FROM jobs WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL),
    (SELECT MIN(lease_expires_at) FROM jobs WHERE state = 'running')

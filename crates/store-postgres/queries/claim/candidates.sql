-- Jobs due by $6 (a little ahead of now, $1) this node can run ($4: registered handler
-- kinds, $5: built-in actions), outside paused or full queues: for each organization, up to
-- $3 of its own by priority, then due time, so that the claim can share the free slots
-- between organizations (rules::fair_share) instead of serving one backlog first. An
-- organization with a running limit offers no more than it has left. The paused queues are
-- read here too, not only from the node's list: a pause holds from its commit on, on every
-- node. SKIP LOCKED: another node's claim in flight is passed over, never waited for and
-- never taken twice.
-- $7-$10: the organizations' claim floors (see ClaimFloors): the walk of jobs_claim starts at
-- an organization's floor, or at its beginning when it has none.
SELECT c.* FROM organizations o
LEFT JOIN unnest($7::text[], $8::int[], $9::timestamptz[], $10::uuid[]) AS f(org, rank, due, id)
    ON f.org = o.name
CROSS JOIN LATERAL (
    SELECT {LEAN_JOB_COLUMNS} FROM jobs
    WHERE org = o.name
      AND state IN ('pending', 'retrying')
      AND ((-priority), next_attempt_at, id) >= (COALESCE(f.rank, -256), COALESCE(f.due, '-infinity'),
                                                  COALESCE(f.id, '00000000-0000-0000-0000-000000000000'))
      AND next_attempt_at <= $6
      AND (deadline IS NULL OR deadline > $1)
      AND NOT (queue = ANY($2))
      AND queue NOT IN (SELECT name FROM queues WHERE org = o.name AND paused)
      AND CASE WHEN action->>'type' = 'handler' THEN kind = ANY($4) ELSE $5 END
    ORDER BY (-priority), next_attempt_at, id
    LIMIT CASE WHEN o.max_running IS NULL THEN $3
               ELSE GREATEST(0, LEAST($3, o.max_running - (
                   SELECT COUNT(*) FROM jobs r WHERE r.org = o.name AND r.state = 'running')))
          END
    FOR UPDATE SKIP LOCKED
) c

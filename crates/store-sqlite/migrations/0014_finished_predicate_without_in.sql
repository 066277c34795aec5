-- The list indexes by queue, kind and target hold finished jobs only (0013). SQLite checks
-- an index's predicate for the old and the new version of every row an UPDATE changes, and
-- it evaluates an IN list of more than two constants through a temporary b-tree that it
-- builds anew each time: six such b-trees for every write of a job's state, a twentieth of
-- a drain's writer time. The same predicate as a chain of comparisons costs nothing of the
-- kind. A list slice of finished jobs names this predicate, word for word, so that the
-- planner may use these indexes (queries/read/list_jobs.sql).
DROP INDEX jobs_list_queue;
DROP INDEX jobs_list_kind;
DROP INDEX jobs_list_target;
CREATE INDEX jobs_list_queue ON jobs (org, state, queue, id)
    WHERE (state = 'succeeded' OR state = 'failed' OR state = 'cancelled' OR state = 'expired');
CREATE INDEX jobs_list_kind ON jobs (org, state, kind, id)
    WHERE (state = 'succeeded' OR state = 'failed' OR state = 'cancelled' OR state = 'expired');
CREATE INDEX jobs_list_target ON jobs (org, state, target, id)
    WHERE (state = 'succeeded' OR state = 'failed' OR state = 'cancelled' OR state = 'expired');

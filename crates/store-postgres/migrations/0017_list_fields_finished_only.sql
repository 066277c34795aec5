-- The list indexes by queue, kind and target hold finished jobs only. Every job is stored
-- pending, claimed and finished, and each of those row versions (updates of the state column
-- are never HOT) took an entry in all three: nine index entries a job on the path of every
-- enqueue, claim and result, where three now serve (the finished version's). A list of
-- waiting or running jobs filtered by one of these fields walks jobs_list (org, state, id)
-- instead: those states hold the backlog and what runs now, not the history
-- (queries/read/list_jobs.sql).
DROP INDEX jobs_list_queue, jobs_list_kind, jobs_list_target;
CREATE INDEX jobs_list_queue ON jobs (org, state, queue, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX jobs_list_kind ON jobs (org, state, kind, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX jobs_list_target ON jobs (org, state, target, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');

-- The list indexes lead with the organization and the state, as on PostgreSQL, and the list
-- reads one (organization, state) slice at a time (read.rs, queries/read/list_jobs.sql). The
-- ones by queue, kind and target hold finished jobs only: a job is stored pending, claimed
-- and finished, and every index whose columns a write touches takes its entries. Before,
-- an insert wrote eleven index entries and each change of state four list entries more;
-- now an insert writes six and only the finishing write touches the three field indexes.
-- A list of waiting or running jobs filtered by one of these fields walks jobs_list and
-- checks the field on the way: those states hold the backlog and what runs now, not the
-- history.
DROP INDEX jobs_state;
DROP INDEX jobs_queue;
DROP INDEX jobs_kind;
DROP INDEX jobs_target;
DROP INDEX jobs_org;
DROP INDEX jobs_state_queue;
DROP INDEX jobs_state_kind;
DROP INDEX jobs_state_target;
CREATE INDEX jobs_list ON jobs (org, state, id);
CREATE INDEX jobs_list_queue ON jobs (org, state, queue, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX jobs_list_kind ON jobs (org, state, kind, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');
CREATE INDEX jobs_list_target ON jobs (org, state, target, id)
    WHERE state IN ('succeeded', 'failed', 'cancelled', 'expired');

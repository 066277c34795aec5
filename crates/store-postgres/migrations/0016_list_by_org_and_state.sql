-- The list indexes lead with the organization and the state, and the list reads one
-- (organization, state) slice at a time (queries/read/list_jobs.sql): four indexes serve every
-- filter where eight did. Each index on the jobs table costs an entry for every row version,
-- and a job writes three (stored, claimed, finished): the four dropped ones were twelve index
-- entries a job, on the path of every enqueue, claim and result.
DROP INDEX jobs_state, jobs_queue, jobs_kind, jobs_target, jobs_org,
           jobs_state_queue, jobs_state_kind, jobs_state_target;
CREATE INDEX jobs_list ON jobs (org, state, id);
CREATE INDEX jobs_list_queue ON jobs (org, state, queue, id);
CREATE INDEX jobs_list_kind ON jobs (org, state, kind, id);
CREATE INDEX jobs_list_target ON jobs (org, state, target, id);

-- The job list at a million jobs (the dashboard's filters). A state filter is mostly combined
-- with one other column: these indexes serve both at once, newest first.
CREATE INDEX jobs_state_queue ON jobs (state, queue, id);
CREATE INDEX jobs_state_kind ON jobs (state, kind, id);
CREATE INDEX jobs_state_target ON jobs (state, target, id);
-- (Label filters already have the GIN index jobs_labels from 0001.)

-- A change of state is never a HOT update, so every version of a job's row (pending,
-- running, finished) took entries in the GIN index of its labels, and GIN's pending list
-- logged its meta page each time: a tenth of a drain's WAL, for jobs that mostly have no
-- labels at all. The index now holds labelled jobs only. A label filter names the predicate
-- (queries/read/list_filters.sql), which a job with the label always meets.
DROP INDEX jobs_labels;
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops) WHERE labels <> '{}'::jsonb;

-- The job list at a million jobs (the dashboard's filters). A state filter is mostly combined
-- with one other column: these indexes serve both at once, newest first.
CREATE INDEX jobs_state_queue ON jobs (state, queue, id);
CREATE INDEX jobs_state_kind ON jobs (state, kind, id);
CREATE INDEX jobs_state_target ON jobs (state, target, id);

-- Labels, one row per key and value, so that a label filter walks an index instead of
-- parsing every job's JSON. Kept in step with jobs.labels by triggers: no write path can
-- forget it.
CREATE TABLE job_labels (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, value, job_id)
) WITHOUT ROWID;
CREATE INDEX job_labels_job ON job_labels (job_id);
INSERT INTO job_labels (key, value, job_id)
    SELECT l.key, l.value, jobs.id FROM jobs, json_each(jobs.labels) AS l;

CREATE TRIGGER job_labels_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_labels (key, value, job_id)
        SELECT l.key, l.value, NEW.id FROM json_each(NEW.labels) AS l;
END;
CREATE TRIGGER job_labels_update AFTER UPDATE OF labels ON jobs BEGIN
    DELETE FROM job_labels WHERE job_id = OLD.id;
    INSERT INTO job_labels (key, value, job_id)
        SELECT l.key, l.value, NEW.id FROM json_each(NEW.labels) AS l;
END;
CREATE TRIGGER job_labels_delete AFTER DELETE ON jobs BEGIN
    DELETE FROM job_labels WHERE job_id = OLD.id;
END;

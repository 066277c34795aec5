-- A pipeline's progress: its completed steps (a JSON array of step records, with their
-- outputs) and the job's attempt count when the current step began.
ALTER TABLE jobs ADD COLUMN steps TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN step_attempt_base INTEGER NOT NULL DEFAULT 0;
-- The pipeline step an event is about.
ALTER TABLE events ADD COLUMN step TEXT;

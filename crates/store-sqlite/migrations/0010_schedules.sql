-- Recurring jobs (issue 18). The definition (cron, zone, rules, job template) is one JSON
-- document read and written whole; what firing changes has columns of its own.
CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    definition  TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_fire   INTEGER,
    last_fire   INTEGER,
    last_job_id TEXT,
    last_skip   TEXT,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The node that fires schedules: one at a time, under a lease it renews.
CREATE TABLE schedule_leader (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    node  TEXT NOT NULL,
    until INTEGER NOT NULL
);

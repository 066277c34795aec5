-- Recurring jobs (issue 18). The definition (cron, zone, rules, job template) is one JSON
-- document read and written whole; what firing changes has columns of its own.
CREATE TABLE schedules (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    definition  jsonb NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    next_fire   timestamptz,
    last_fire   timestamptz,
    last_job_id uuid,
    last_skip   text,
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- The node that fires schedules: one at a time, under a lease it renews.
CREATE TABLE schedule_leader (
    id    integer PRIMARY KEY CHECK (id = 1),
    node  text NOT NULL,
    until timestamptz NOT NULL
);

-- Organizations (issue 17). Everything a team owns belongs to one: jobs, queues, managed
-- policies, schedules, tokens and notification channels; names are unique per organization.
-- What existed before lands in `default`, so a single team never has to know they exist.
CREATE TABLE organizations (
    name           TEXT PRIMARY KEY,
    -- The policy of jobs that name none (NULL: the instance's rules).
    default_policy TEXT,
    -- Attempts of the organization's jobs running at once, on all nodes (NULL: no limit).
    max_running    INTEGER,
    -- Retries (attempts after a job's first) of its jobs started per minute, on all nodes
    -- (NULL: no limit).
    retry_budget   INTEGER,
    created_at     INTEGER NOT NULL,
    created_by     TEXT NOT NULL
);
INSERT INTO organizations (name, created_at, created_by)
VALUES ('default', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 'migration');

ALTER TABLE jobs ADD COLUMN org TEXT NOT NULL DEFAULT 'default';
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (org, queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The claim reads each organization's due jobs in order (fair share): the org leads.
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (org, priority DESC, next_attempt_at, id) WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_org ON jobs (org, id);

CREATE TABLE queues_by_org (
    org        TEXT NOT NULL,
    name       TEXT NOT NULL,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (org, name)
);
INSERT INTO queues_by_org SELECT 'default', name, paused, updated_at, updated_by FROM queues;
DROP TABLE queues;
ALTER TABLE queues_by_org RENAME TO queues;

-- A token acts in its organization; an instance token (the first admin, and every admin
-- token from before organizations) may act in any and manage them.
CREATE TABLE api_tokens_by_org (
    id          TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    instance    INTEGER NOT NULL DEFAULT 0,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  INTEGER,
    UNIQUE (org, name)
);
INSERT INTO api_tokens_by_org
SELECT id, 'default', role = 'admin', name, role, secret_hash, created_at, created_by, revoked_at
FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_by_org RENAME TO api_tokens;

CREATE TABLE managed_policies_by_org (
    org        TEXT NOT NULL,
    name       TEXT NOT NULL,
    policy     TEXT NOT NULL,
    active     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (org, name)
);
INSERT INTO managed_policies_by_org SELECT 'default', name, policy, active, updated_at, updated_by FROM managed_policies;
DROP TABLE managed_policies;
ALTER TABLE managed_policies_by_org RENAME TO managed_policies;

CREATE TABLE schedules_by_org (
    id          TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_fire   INTEGER,
    last_fire   INTEGER,
    last_job_id TEXT,
    last_skip   TEXT,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (org, name)
);
INSERT INTO schedules_by_org
SELECT id, 'default', name, definition, paused, next_fire, last_fire, last_job_id, last_skip, created_at, created_by, updated_at
FROM schedules;
DROP TABLE schedules;
ALTER TABLE schedules_by_org RENAME TO schedules;

-- Notification channels an organization's admins manage through the API. `config` holds
-- the secrets (webhook URL, SMTP password): written, never read back by the API.
CREATE TABLE channels (
    org        TEXT NOT NULL,
    name       TEXT NOT NULL,
    config     TEXT NOT NULL,  -- JSON
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (org, name)
);

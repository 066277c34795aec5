-- Organizations (issue 17). Everything a team owns belongs to one: jobs, queues, managed
-- policies, schedules, tokens and notification channels; names are unique per organization.
-- What existed before lands in `default`, so a single team never has to know they exist.
CREATE TABLE organizations (
    name           text PRIMARY KEY,
    -- The policy of jobs that name none (NULL: the instance's rules).
    default_policy text,
    -- Attempts of the organization's jobs running at once, on all nodes (NULL: no limit).
    max_running    integer,
    -- Retries (attempts after a job's first) of its jobs started per minute, on all nodes
    -- (NULL: no limit).
    retry_budget   integer,
    created_at     timestamptz NOT NULL,
    created_by     text NOT NULL
);
INSERT INTO organizations (name, created_at, created_by) VALUES ('default', now(), 'migration');

ALTER TABLE jobs ADD COLUMN org text NOT NULL DEFAULT 'default';
DROP INDEX jobs_idempotency;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (org, queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The claim reads each organization's due jobs in order (fair share): the org leads.
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (org, priority DESC, next_attempt_at, id) WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_org ON jobs (org, id);

ALTER TABLE queues ADD COLUMN org text NOT NULL DEFAULT 'default';
ALTER TABLE queues DROP CONSTRAINT queues_pkey, ADD PRIMARY KEY (org, name);

-- A token acts in its organization; an instance token (the first admin, and every admin
-- token from before organizations) may act in any and manage them.
ALTER TABLE api_tokens ADD COLUMN org text NOT NULL DEFAULT 'default';
ALTER TABLE api_tokens ADD COLUMN instance boolean NOT NULL DEFAULT false;
UPDATE api_tokens SET instance = (role = 'admin');
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_name_key, ADD UNIQUE (org, name);

ALTER TABLE managed_policies ADD COLUMN org text NOT NULL DEFAULT 'default';
ALTER TABLE managed_policies DROP CONSTRAINT managed_policies_pkey, ADD PRIMARY KEY (org, name);

ALTER TABLE schedules ADD COLUMN org text NOT NULL DEFAULT 'default';
ALTER TABLE schedules DROP CONSTRAINT schedules_name_key, ADD UNIQUE (org, name);

-- Notification channels an organization's admins manage through the API. `config` holds
-- the secrets (webhook URL, SMTP password): written, never read back by the API.
CREATE TABLE channels (
    org        text NOT NULL,
    name       text NOT NULL,
    config     jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (org, name)
);

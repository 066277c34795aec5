-- Circuit breaking and retry budgets per target (SPEC §4), notification deliveries (SPEC §6).

-- Each attempt carries its job's target, so that a budget counts the retries started in its
-- window and a circuit the results finished in it.
ALTER TABLE attempts ADD COLUMN target text;
-- true: a transient failure, false: an answer, NULL: running or not counted.
ALTER TABLE attempts ADD COLUMN target_failed boolean;
CREATE INDEX attempts_target ON attempts (target, started_at) WHERE target IS NOT NULL;

-- Why the gate put off a waiting job's start (circuit open, budget exhausted).
ALTER TABLE jobs ADD COLUMN hold_reason text;

-- Circuits that are not closed: open until open_until, then half-open with one probe.
CREATE TABLE circuits (
    target           text PRIMARY KEY,
    opened_at        timestamptz NOT NULL,
    open_until       timestamptz NOT NULL,
    probe_attempt_id bigint,
    failures         integer NOT NULL,
    attempts         integer NOT NULL
);

CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    job_id           uuid NOT NULL,
    event            text NOT NULL,
    sink             text NOT NULL,
    payload          jsonb NOT NULL,
    state            text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_lease ON notifications (lease_expires_at) WHERE state = 'delivering';
CREATE INDEX notifications_job ON notifications (job_id, id);

CREATE TABLE notification_attempts (
    id              bigserial PRIMARY KEY,
    notification_id bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    number          integer NOT NULL,
    node            text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    ok              boolean,
    status          integer,
    error           text
);
CREATE INDEX notification_attempts_of ON notification_attempts (notification_id, id);

-- Circuit breaking and retry budgets per target (SPEC §4), notification deliveries (SPEC §6).

-- Each attempt carries its job's target, so that a budget counts the retries started in its
-- window and a circuit the results finished in it.
ALTER TABLE attempts ADD COLUMN target TEXT;
-- 1: a transient failure, 0: an answer, NULL: running or not counted (cancelled, released).
ALTER TABLE attempts ADD COLUMN target_failed INTEGER;
CREATE INDEX attempts_target ON attempts (target, started_at) WHERE target IS NOT NULL;

-- Why the gate put off a waiting job's start (circuit open, budget exhausted).
ALTER TABLE jobs ADD COLUMN hold_reason TEXT;

-- Circuits that are not closed: open until open_until, then half-open with one probe.
CREATE TABLE circuits (
    target           TEXT PRIMARY KEY,
    opened_at        INTEGER NOT NULL,
    open_until       INTEGER NOT NULL,
    probe_attempt_id INTEGER,
    failures         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL
);

CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id           TEXT NOT NULL,
    event            TEXT NOT NULL,
    sink             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_lease ON notifications (lease_expires_at) WHERE state = 'delivering';
CREATE INDEX notifications_job ON notifications (job_id, id);

CREATE TABLE notification_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id INTEGER NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    node            TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,
    ok              INTEGER,
    status          INTEGER,
    error           TEXT
);
CREATE INDEX notification_attempts_of ON notification_attempts (notification_id, id);

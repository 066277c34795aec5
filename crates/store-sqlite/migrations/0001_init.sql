-- Jobs, their attempts, their events (the timeline) and their captured output.
-- Instants are integer milliseconds since the Unix epoch, UTC.
CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation time
    queue              TEXT NOT NULL,
    kind               TEXT NOT NULL,
    target             TEXT,
    action             TEXT NOT NULL,             -- JSON
    policy_name        TEXT NOT NULL,
    policy             TEXT NOT NULL,             -- JSON snapshot taken at submit
    priority           INTEGER NOT NULL,
    run_at             INTEGER NOT NULL,
    deadline           INTEGER,
    labels             TEXT NOT NULL,             -- JSON object
    idempotency_key    TEXT,
    created_by         TEXT,
    state              TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER,
    last_error         TEXT,
    last_error_class   TEXT,
    last_rule          TEXT,
    finish_reason      TEXT,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    current_attempt_id INTEGER,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX jobs_claim ON jobs (priority DESC, next_attempt_at, id) WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL AND state IN ('pending', 'retrying');
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);
CREATE INDEX jobs_kind ON jobs (kind, id);
CREATE INDEX jobs_target ON jobs (target, id);
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,  -- the lease fence
    job_id               TEXT NOT NULL,
    number               INTEGER NOT NULL,
    step                 TEXT,
    node                 TEXT NOT NULL,
    started_at           INTEGER NOT NULL,
    finished_at          INTEGER,
    outcome              TEXT,
    exit_code            INTEGER,
    error                TEXT,
    class                TEXT,
    rule                 TEXT,
    next_delay_ms        INTEGER,
    delay_reason         TEXT,
    output_dropped_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_job ON attempts (job_id, id);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- position in the global stream
    job_id     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE log_lines (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    attempt_id INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    idx        INTEGER NOT NULL,  -- position within the attempt's output, for trimming
    at         INTEGER NOT NULL,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX log_lines_job ON log_lines (job_id, seq);
CREATE INDEX log_lines_attempt ON log_lines (attempt_id, idx);

-- The same tables as the SQLite backend, with PostgreSQL types. Instants are timestamptz.
CREATE TABLE jobs (
    id                 uuid PRIMARY KEY,          -- UUIDv7: sorts by creation time
    queue              text NOT NULL,
    kind               text NOT NULL,
    target             text,
    action             jsonb NOT NULL,
    policy_name        text NOT NULL,
    policy             jsonb NOT NULL,            -- snapshot taken at submit
    priority           integer NOT NULL,
    run_at             timestamptz NOT NULL,
    deadline           timestamptz,
    labels             jsonb NOT NULL,
    idempotency_key    text,
    created_by         text,
    state              text NOT NULL,
    attempt            integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,
    last_error         text,
    last_error_class   text,
    last_rule          text,
    finish_reason      text,
    lease_owner        text,
    lease_expires_at   timestamptz,
    current_attempt_id bigint,
    cancel_requested   boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL,
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL
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
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops);

CREATE TABLE attempts (
    id                   bigserial PRIMARY KEY,  -- the lease fence
    job_id               uuid NOT NULL,
    number               integer NOT NULL,
    step                 text,
    node                 text NOT NULL,
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    outcome              text,
    exit_code            integer,
    error                text,
    class                text,
    rule                 text,
    next_delay_ms        bigint,
    delay_reason         text,
    output_dropped_bytes bigint NOT NULL DEFAULT 0,
    pid                  bigint,
    pid_started          bigint
);
CREATE INDEX attempts_job ON attempts (job_id, id);

CREATE TABLE events (
    id         bigserial PRIMARY KEY,
    job_id     uuid NOT NULL,
    at         timestamptz NOT NULL,
    from_state text,
    to_state   text NOT NULL,
    reason     text NOT NULL,
    actor      text NOT NULL
);
CREATE INDEX events_job ON events (job_id, id);

CREATE TABLE log_lines (
    seq        bigserial PRIMARY KEY,
    job_id     uuid NOT NULL,
    attempt_id bigint NOT NULL,
    attempt    integer NOT NULL,
    idx        bigint NOT NULL,
    at         timestamptz NOT NULL,
    stream     text NOT NULL,
    line       text NOT NULL
);
CREATE INDEX log_lines_job ON log_lines (job_id, seq);
CREATE INDEX log_lines_attempt ON log_lines (attempt_id, idx);

-- API tokens (only the SHA-256 of their secret), policies managed through the API, and the
-- index behind stats' attempts-over-time.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE managed_policies (
    name       TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,  -- JSON
    active     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

CREATE INDEX attempts_started ON attempts (started_at);

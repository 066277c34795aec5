-- API tokens (only the SHA-256 of their secret), policies managed through the API, and the
-- index behind stats' attempts-over-time.
CREATE TABLE api_tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL,
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    revoked_at  timestamptz
);

CREATE TABLE managed_policies (
    name       text PRIMARY KEY,
    policy     jsonb NOT NULL,
    active     boolean NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);

CREATE INDEX attempts_started ON attempts (started_at);

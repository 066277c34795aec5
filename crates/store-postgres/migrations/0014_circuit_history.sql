-- Circuit history (issue 19): one row per outage of a target, from its circuit's opening to
-- its closing (by a probe's success or by hand), however often failed probes re-opened it.
CREATE TABLE circuit_history (
    id         bigserial PRIMARY KEY,
    target     text NOT NULL,
    opened_at  timestamptz NOT NULL,
    -- NULL while the circuit is open or half-open.
    closed_at  timestamptz,
    failures   integer NOT NULL,
    attempts   integer NOT NULL,
    reopened   integer NOT NULL DEFAULT 0,
    closed_by  text
);
CREATE INDEX circuit_history_open ON circuit_history (target) WHERE closed_at IS NULL;
CREATE INDEX circuit_history_opened ON circuit_history (opened_at);
-- Circuits open at the upgrade get their outage too.
INSERT INTO circuit_history (target, opened_at, failures, attempts)
SELECT target, opened_at, failures, attempts FROM circuits;

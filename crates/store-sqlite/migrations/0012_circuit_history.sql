-- Circuit history (issue 19): one row per outage of a target, from its circuit's opening to
-- its closing (by a probe's success or by hand), however often failed probes re-opened it.
CREATE TABLE circuit_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    opened_at  INTEGER NOT NULL,
    -- NULL while the circuit is open or half-open.
    closed_at  INTEGER,
    failures   INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    reopened   INTEGER NOT NULL DEFAULT 0,
    closed_by  TEXT
);
CREATE INDEX circuit_history_open ON circuit_history (target) WHERE closed_at IS NULL;
CREATE INDEX circuit_history_opened ON circuit_history (opened_at);
-- Circuits open at the upgrade get their outage too.
INSERT INTO circuit_history (target, opened_at, failures, attempts)
SELECT target, opened_at, failures, attempts FROM circuits;

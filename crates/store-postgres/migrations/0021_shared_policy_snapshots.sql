-- A job's policy snapshot is kept once per distinct policy, not on every job's row: a batch
-- of 10,000 jobs under one policy parsed and stored the same 190-byte jsonb document 10,000
-- times (a third of the server's time in bulk enqueue), and every change of a job's state
-- copied it into a new row version and the WAL. New jobs name their snapshot by
-- `policy_id`; `policy` stays for the rows written before this migration and for a requeue
-- that changes the policy (an inline policy wins: JOB_COLUMNS reads
-- `COALESCE(policy, <the snapshot>)`). Snapshots are never deleted, so a process may keep the
-- ids it has seen; there is no foreign key, which would cost every insert a look-up.
-- (Nothing here rewrites the jobs table: a nullable column without default, a dropped
-- NOT NULL.)
CREATE TABLE policy_snapshots (
    id  bigserial PRIMARY KEY,
    doc jsonb NOT NULL UNIQUE
);
ALTER TABLE jobs ADD COLUMN policy_id bigint, ALTER COLUMN policy DROP NOT NULL;

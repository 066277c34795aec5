-- The claim index in ascending key order, (-priority) first, so that a claim can start its
-- walk at a row comparison, `((-priority), next_attempt_at, id) >= floor`, and pass over the
-- entries of jobs already taken (dead until VACUUM; see ClaimFloors in the crate).
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (org, (-priority), next_attempt_at, id) WHERE state IN ('pending', 'retrying');

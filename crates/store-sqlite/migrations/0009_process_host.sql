-- The host an attempt's process runs on (boot id and pid namespace): a node rescuing the
-- attempt stops the process only when it is on the same host, where the pid means the same
-- process.
ALTER TABLE attempts ADD COLUMN pid_host TEXT;

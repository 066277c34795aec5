-- An attempt's opening and closing system lines ("attempt 1 of 5 started on …",
-- "exit code 0 → succeeded: …"), when they come with its result, are kept on its row, which
-- the result updates anyway, instead of as two log rows with three b-tree entries each
-- (rows::ResultLines). Each keeps the sequence number it would have had as a row, reserved
-- in sqlite_sequence; the log's reads merge them back (queries/logs/). Lines written before
-- this migration stay rows.
ALTER TABLE attempts ADD COLUMN opening_seq INTEGER;
ALTER TABLE attempts ADD COLUMN opening_at INTEGER;
ALTER TABLE attempts ADD COLUMN opening_line TEXT;
ALTER TABLE attempts ADD COLUMN closing_seq INTEGER;
ALTER TABLE attempts ADD COLUMN closing_at INTEGER;
ALTER TABLE attempts ADD COLUMN closing_line TEXT;

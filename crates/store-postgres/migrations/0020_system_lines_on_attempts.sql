-- An attempt's opening and closing system lines ("attempt 1 of 5 started on …",
-- "exit code 0 → succeeded: …"), when they come with its result, are kept on its row, which
-- the result updates anyway, instead of as two log rows with two index entries each
-- (rows::ResultLines). Each keeps the sequence number it would have had as a row; the log's
-- reads merge them back (queries/logs/). Lines written before this migration stay rows.
ALTER TABLE attempts
    ADD COLUMN opening_seq bigint, ADD COLUMN opening_at timestamptz, ADD COLUMN opening_line text,
    ADD COLUMN closing_seq bigint, ADD COLUMN closing_at timestamptz, ADD COLUMN closing_line text;
-- The finishing update of an attempt's row, now wider by its two lines, stays HOT only with
-- room for it on the row's page: at fillfactor 40, 11,810 of 20,000 updates of a drain were;
-- at 25 all are, and the table is smaller (7.3 MB against 9.8 MB: the other updates put their
-- new versions on fresh pages).
ALTER TABLE attempts SET (fillfactor = 25);

-- The live stream reads events in the order their transactions became final instead of
-- serialising every event-writing commit behind one advisory lock. Each event records the
-- transaction that wrote it; every transaction older than a snapshot's xmin has ended, so
-- the events with `xid < xmin` are final and a reader can deliver them in (xid, id) order
-- without ever skipping one that commits later. Rows written before this migration read as
-- transaction 0: all of them come first, in id order. (A constant default adds the column
-- without rewriting the table; the real default applies to new rows.)
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX events_stream ON events (xid, id);

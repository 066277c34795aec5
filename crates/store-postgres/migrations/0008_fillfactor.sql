-- An attempt's row is written at its claim and updated once at its end, in columns no index
-- covers: with room left on its page the update is HOT (no index entries written).
-- A job's row changes state several times; the room lets the heap keep its versions
-- together. Applies to pages written from now on.
ALTER TABLE attempts SET (fillfactor = 70);
ALTER TABLE jobs SET (fillfactor = 80);

-- The process group of a running command attempt, so that a restarted node can stop what a
-- killed one left behind. `pid_started` is the process start time in clock ticks since boot
-- (/proc/PID/stat field 22): with the pid it names one process, even after pid reuse.
ALTER TABLE attempts ADD COLUMN pid INTEGER;
ALTER TABLE attempts ADD COLUMN pid_started INTEGER;

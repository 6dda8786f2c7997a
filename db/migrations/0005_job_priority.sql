-- The job's priority class (0 relax, 1 standard, 2 priority), so a restart keeps its place.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;

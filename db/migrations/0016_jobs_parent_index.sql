-- Deleting a job sets its children's parent_job_id to NULL (the foreign key's ON DELETE SET
-- NULL): without an index on every parent_job_id, SQLite scans all jobs for each job deleted
-- (/forget-me, retention's prune). This one also serves the upscales' withdrawal that
-- 0013's partial index served.
DROP INDEX jobs_upscaled_from;
CREATE INDEX jobs_parent ON jobs (parent_job_id);

-- A member's jobs waiting or running in one server, counted before each submit (the bound
-- EASEL_MAX_QUEUED_PER_MEMBER) by reading only those, not every job they ever made.
CREATE INDEX jobs_unfinished_member ON jobs (user_id, guild_id)
    WHERE status IN ('queued', 'running');

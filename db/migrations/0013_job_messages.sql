-- Every message Easel posted in a server with a job's pictures (its result, /show and U1-U4
-- posts): a moderator deleting any of them withdraws the job. They go with their job.
CREATE TABLE job_messages (
    message_id  INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    guild_id    INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL
);
CREATE INDEX job_messages_job ON job_messages (job_id);
-- An upscale shows its parent's picture: withdrawn with it.
CREATE INDEX jobs_upscaled_from ON jobs (parent_job_id) WHERE kind = 'upscale';
-- The results posted before this migration.
INSERT OR IGNORE INTO job_messages (message_id, job_id, guild_id, channel_id)
    SELECT result_message_id, id, guild_id, channel_id FROM jobs
    WHERE result_message_id IS NOT NULL AND guild_id IS NOT NULL AND channel_id IS NOT NULL;

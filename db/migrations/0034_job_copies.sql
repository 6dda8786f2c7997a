-- Easel's copies of a server's job's pictures in members' direct messages (DM me, results by
-- DM): a moderator's withdrawal of the job leaves them to delete (pending_post_deletes) with its
-- posts, since no moderator can reach them there. Kept apart from job_messages: a member
-- deleting their own copy withdraws nothing. They go with their job.
CREATE TABLE job_copies (
    message_id  INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    channel_id  INTEGER NOT NULL
);
CREATE INDEX job_copies_job ON job_copies (job_id);

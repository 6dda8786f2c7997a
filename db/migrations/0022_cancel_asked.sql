-- When a member (or a ban, or a moderator's withdrawal) asked to stop a running job
-- (NULL: never): written before they are told it stops (bot.jobs.queue.JobQueue.cancel), so a
-- stop of Easel before the job's end is written cannot render and charge it again: the next
-- start ends it, cancelled and refunded.
ALTER TABLE jobs ADD COLUMN cancel_asked_at REAL;

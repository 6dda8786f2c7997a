-- A result whose post failed is tried again by the running queue (bot.jobs.queue's delivery
-- sweep): when its next try is due while it is undelivered (NULL: none failed), since when
-- its tries fail, and how many failed. And when a post of it was last tried (NULL: never):
-- a try may have landed though its answer was lost, or Easel stopped before recording it, so
-- the next try looks for that post before posting again.
ALTER TABLE jobs ADD COLUMN delivery_retry_at REAL;
ALTER TABLE jobs ADD COLUMN delivery_failing_since REAL;
ALTER TABLE jobs ADD COLUMN delivery_tries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN post_attempted_at REAL;
CREATE INDEX jobs_delivery_due ON jobs (delivery_retry_at)
    WHERE delivered_at IS NULL AND delivery_retry_at IS NOT NULL;

-- A device lost while it rendered several jobs at once (bot.jobs.queue.JobQueue._device_lost):
-- which of them killed it is not known, so none spends a render attempt on it, and each
-- renders alone from then on, in this process and after a restart, until it ends; a loss
-- while it renders alone is its own, and counts (MAX_RENDER_ATTEMPTS).
ALTER TABLE jobs ADD COLUMN renders_alone INTEGER NOT NULL DEFAULT 0
    CHECK (renders_alone IN (0, 1));

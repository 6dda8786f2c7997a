-- How a job's result must be posted, kept with the job so a restart posts it the same way.
ALTER TABLE jobs ADD COLUMN filesize_limit INTEGER;  -- the interaction's attachment limit
ALTER TABLE jobs ADD COLUMN spoiler INTEGER NOT NULL DEFAULT 0;  -- the guild's NSFW policy said so

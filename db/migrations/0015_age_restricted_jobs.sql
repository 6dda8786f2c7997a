-- The job was made in an age-restricted channel (a thread: its parent), journaled at submit: a
-- moderator who turns the channel's flag off later does not free its pictures. Jobs journaled
-- before this migration have 0 and follow their channel's flag of now alone.
ALTER TABLE jobs ADD COLUMN age_restricted INTEGER NOT NULL DEFAULT 0;

-- The channel of the thread (or forum post) a job was made in, journaled at submit: a thread is
-- enabled with its channel on a server's channel list, and Discord may not show Easel the
-- thread later (a private thread it was not added to). NULL: not made in a thread, or journaled
-- before this migration (its delivery asks Discord, as before).
ALTER TABLE jobs ADD COLUMN thread_parent_id INTEGER;

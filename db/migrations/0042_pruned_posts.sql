-- Easel's posts and copies by DM of the jobs retention deleted (job_messages and job_copies go
-- with their job): ids only, no text, written in the prune's transaction, so that the maker's
-- /forget-me still deletes them from Discord (``db.history.erase_user``). A row goes when
-- that /forget-me takes it, when its post is deleted (heard, or its channel or thread with
-- it), or when its copy's member deletes it or runs /forget-me; not by age: the post stays in
-- Discord as long as no one deletes it.
CREATE TABLE pruned_posts (
    message_id  INTEGER PRIMARY KEY,
    -- The maker of the job, whose /forget-me deletes it.
    user_id     INTEGER NOT NULL,
    channel_id  INTEGER NOT NULL,
    -- The channel of the thread it was posted in (NULL: not in a thread, or a copy by DM).
    parent_id   INTEGER,
    -- When its job was made: a /forget-me erases what was made up to when it was asked.
    made_at     REAL NOT NULL
);
CREATE INDEX pruned_posts_user ON pruned_posts (user_id, made_at);
CREATE INDEX pruned_posts_channel ON pruned_posts (channel_id);
CREATE INDEX pruned_posts_parent ON pruned_posts (parent_id) WHERE parent_id IS NOT NULL;

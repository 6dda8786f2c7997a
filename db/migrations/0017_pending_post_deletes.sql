-- /forget-me's deletes from Discord of the erased member's posts still to do: written with the
-- erase, each removed once its post is deleted (or found gone) or given up after its last
-- try, so that a stop or a refusal in between leaves them to try again. Names no member: the
-- posts' jobs are gone.
CREATE TABLE pending_post_deletes (
    message_id  INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    -- Deletes Discord refused or failed so far, and when the next may be tried (seconds since
    -- the epoch; 0: at once).
    failures    INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL DEFAULT 0
);

-- The channels and threads deleted whose kept posts (``pruned_posts``: their own and their
-- threads') are still to delete: written in the withdrawal's transaction, and each deleted
-- after it in short batches (a channel's of years are too many for one transaction, which
-- every other command waits on). A stop between leaves the row for the next retention round.
CREATE TABLE deleted_channels_kept_posts (
    channel_id  INTEGER PRIMARY KEY
);

-- The pixels of a job a moderator withdrew, kept when its row goes (its maker's /forget-me):
-- a saved copy of the picture stays refused in that server, whoever uploads it. Names no
-- member and no prompt: the server, the digest (bot.images.pixel_digest) and when.
CREATE TABLE withdrawn_pictures (
    guild_id      INTEGER NOT NULL,
    pixel_digest  BLOB NOT NULL,
    withdrawn_at  REAL NOT NULL,
    PRIMARY KEY (guild_id, pixel_digest)
) WITHOUT ROWID;
-- A deleted channel or thread withdraws the jobs posted there.
CREATE INDEX job_messages_channel ON job_messages (guild_id, channel_id);
-- The channel a thread post's thread is in (None: not a thread): deleting a channel deletes its
-- threads, archived ones too, which Discord does not announce each.
ALTER TABLE job_messages ADD COLUMN parent_id INTEGER;
CREATE INDEX job_messages_parent ON job_messages (guild_id, parent_id) WHERE parent_id IS NOT NULL;
-- A deleted channel withdraws the jobs made there not yet delivered (their result has no post).
-- Withdrawn so (1), a job's pixels stay usable elsewhere: a bot deletes temporary channels, and
-- their owner may hold Manage Channels.
ALTER TABLE jobs ADD COLUMN withdrawn_with_channel INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_undelivered_channel ON jobs (guild_id, channel_id) WHERE delivered_at IS NULL;
-- A moderator's withdrawal before this one went to its job alone: it now goes to the server's
-- jobs made after it with the same pixels (the same picture made again), and, as the runtime
-- rule (db.history._withdraw_with_made_from), to their upscales (the same pictures, larger) and
-- the jobs made from them not yet delivered, theirs and so on, all at its moment, so restoring
-- it restores them (no such job: NULL, as it was).
WITH RECURSIVE withdrawn(id, at) AS (
    SELECT id, at FROM (
        SELECT jobs.id, (
            SELECT MIN(removed.withdrawn_at) FROM images mine
            JOIN images same ON same.pixel_digest = mine.pixel_digest
            JOIN jobs removed ON removed.id = same.job_id
            WHERE mine.job_id = jobs.id AND removed.guild_id = jobs.guild_id
            AND removed.withdrawn_at IS NOT NULL AND removed.withheld_why IS NULL
            AND removed.created_at < jobs.created_at
        ) AS at FROM jobs WHERE jobs.withdrawn_at IS NULL AND jobs.guild_id IS NOT NULL
    ) WHERE at IS NOT NULL
    UNION SELECT child.id, withdrawn.at FROM jobs child
    JOIN withdrawn ON child.parent_job_id = withdrawn.id
    WHERE child.kind = 'upscale' OR child.delivered_at IS NULL
)
UPDATE jobs SET withdrawn_at = (SELECT MIN(at) FROM withdrawn WHERE withdrawn.id = jobs.id)
WHERE withdrawn_at IS NULL AND id IN (SELECT id FROM withdrawn);

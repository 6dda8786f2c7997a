-- The dashboard's gallery for channels holding more than 1,000 of a server's shown jobs, all
-- older than the rest, walked the server's whole newest-first index: now it reads each chosen
-- channel's newest in turn (its jobs by end, the picture channels' reads as before).
DROP INDEX jobs_shown_channels;
CREATE INDEX jobs_shown_channels ON jobs (guild_id, channel_id, finished_at)
    WHERE status = 'done' AND NOT private;
-- The dashboard's count of one server's unfinished jobs read every server's.
CREATE INDEX jobs_unfinished_server ON jobs (guild_id) WHERE status IN ('queued', 'running');

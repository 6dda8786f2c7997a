-- The admin dashboard polls every 3 s: the channels a server's shown pictures were made in (for
-- the admin's reading rights) and its newest shown pictures, without scanning every done job.
CREATE INDEX jobs_shown_channels ON jobs (guild_id, channel_id) WHERE status = 'done' AND NOT private;
CREATE INDEX jobs_shown_newest ON jobs (guild_id, finished_at) WHERE status = 'done' AND NOT private;

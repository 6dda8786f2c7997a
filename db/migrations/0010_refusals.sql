-- Refusals sent to members in a server (a rule, a limit, a bad value), for its admins'
-- dashboard. No prompt is stored; ``sentence`` is what the member was told, NULL for a member
-- who keeps their results private. /forget-me deletes a member's rows; retention prunes old ones.
CREATE TABLE refusals (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL,
    channel_id  INTEGER,
    user_id     INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    sentence    TEXT,
    created_at  REAL NOT NULL
);
CREATE INDEX refusals_guild_time ON refusals (guild_id, created_at);
CREATE INDEX refusals_user ON refusals (user_id);
CREATE INDEX refusals_time ON refusals (created_at);

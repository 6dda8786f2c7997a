-- The quota ledger: at most one reserve, one commit and one refund per job, so restarts and
-- redeliveries can repeat any step without charging twice. Rows are never updated or deleted.
-- No foreign key to jobs: the reservation is written before (in the same transaction as) the
-- job's journal row, and the ledger outlives pruned history.
CREATE TABLE quota_ledger (
    job_id       TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('reserve', 'commit', 'refund')),
    user_id      INTEGER NOT NULL,
    guild_id     INTEGER,  -- NULL: a direct message
    images       INTEGER NOT NULL CHECK (images >= 0),
    gpu_seconds  REAL NOT NULL CHECK (gpu_seconds >= 0),
    at           REAL NOT NULL,
    UNIQUE (job_id, kind)
);
CREATE INDEX quota_ledger_usage ON quota_ledger (user_id, guild_id, kind, at);

-- Limit overrides: a guild's default (subject_id = guild_id), a role's, or a user's.
-- A NULL limit means unlimited at that level; a missing row means "no override here".
CREATE TABLE quota_limits (
    scope                  TEXT NOT NULL CHECK (scope IN ('guild', 'role', 'user')),
    guild_id               INTEGER NOT NULL,
    subject_id             INTEGER NOT NULL,
    images_per_day         INTEGER CHECK (images_per_day >= 0),
    images_per_week        INTEGER CHECK (images_per_week >= 0),
    images_per_month       INTEGER CHECK (images_per_month >= 0),
    gpu_seconds_per_day    REAL CHECK (gpu_seconds_per_day >= 0),
    gpu_seconds_per_week   REAL CHECK (gpu_seconds_per_week >= 0),
    gpu_seconds_per_month  REAL CHECK (gpu_seconds_per_month >= 0),
    updated_at             REAL NOT NULL,
    PRIMARY KEY (scope, guild_id, subject_id)
);

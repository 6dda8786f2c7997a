-- Personal defaults for /imagine: NULL means "no preference, use Easel's default".
CREATE TABLE user_settings (
    user_id          INTEGER PRIMARY KEY,
    steps            INTEGER CHECK (steps BETWEEN 1 AND 150),
    cfg              REAL CHECK (cfg BETWEEN 0 AND 30),
    sampler          TEXT,
    size             TEXT,
    negative         TEXT,
    private_results  INTEGER NOT NULL DEFAULT 0 CHECK (private_results IN (0, 1)),
    updated_at       REAL NOT NULL
);

-- One row per guild that changed anything; a missing row means every default.
CREATE TABLE guild_settings (
    guild_id       INTEGER PRIMARY KEY,
    default_model  TEXT,
    nsfw_policy    TEXT NOT NULL DEFAULT 'allow'
                   CHECK (nsfw_policy IN ('allow', 'spoiler', 'age_restricted_only')),
    updated_at     REAL NOT NULL
);

-- The guild's lists; an empty allowed_channel / allowed_model list means "all allowed".
CREATE TABLE guild_list_entries (
    guild_id  INTEGER NOT NULL,
    list      TEXT NOT NULL
              CHECK (list IN ('allowed_channel', 'allowed_model', 'priority_role', 'banned_word')),
    value     TEXT NOT NULL,
    PRIMARY KEY (guild_id, list, value)
);

-- Who changed which setting, from what to what. Rows are never updated or deleted.
CREATE TABLE settings_audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    setting    TEXT NOT NULL,
    old_value  TEXT,
    new_value  TEXT,
    at         REAL NOT NULL
);
CREATE INDEX settings_audit_guild ON settings_audit (guild_id, at);

-- Named /imagine presets: a member's own (scope 'member', owner = user id, usable anywhere)
-- and a server's (scope 'server', owner = guild id, saved by its admins, usable there only).
-- ``name_key`` is the casefolded name: "Portrait" and "portrait" are one preset.
CREATE TABLE presets (
    scope        TEXT NOT NULL CHECK (scope IN ('member', 'server')),
    owner_id     INTEGER NOT NULL,
    name_key     TEXT NOT NULL,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 32),
    values_json  TEXT NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (scope, owner_id, name_key)
);

-- A member's default clip skip for /imagine (NULL: the model's last layer).
ALTER TABLE user_settings ADD COLUMN clip_skip INTEGER CHECK (clip_skip BETWEEN 1 AND 12);

-- The member wants a copy of each of their results in their direct messages too.
ALTER TABLE user_settings ADD COLUMN results_by_dm INTEGER NOT NULL DEFAULT 0
    CHECK (results_by_dm IN (0, 1));

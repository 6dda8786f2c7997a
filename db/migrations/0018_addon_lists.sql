-- Per-server lists of the add-ons installed for the bot (LoRAs, embeddings, VAEs, upscalers,
-- ControlNets), kept like the model list: an empty list means "every installed file of that
-- kind". SQLite cannot change a CHECK in place, so the table is copied into a new one.
CREATE TABLE guild_list_entries_new (
    guild_id  INTEGER NOT NULL,
    list      TEXT NOT NULL
              CHECK (list IN ('allowed_channel', 'allowed_model', 'priority_role', 'banned_word',
                              'allowed_lora', 'allowed_embedding', 'allowed_vae',
                              'allowed_upscaler', 'allowed_controlnet')),
    value     TEXT NOT NULL,
    PRIMARY KEY (guild_id, list, value)
);
INSERT INTO guild_list_entries_new (guild_id, list, value)
    SELECT guild_id, list, value FROM guild_list_entries;
DROP TABLE guild_list_entries;
ALTER TABLE guild_list_entries_new RENAME TO guild_list_entries;

-- Jobs are the journal: a row exists before the user is told the request was accepted.
CREATE TABLE jobs (
    id                      TEXT PRIMARY KEY,
    kind                    TEXT NOT NULL,
    status                  TEXT NOT NULL DEFAULT 'queued'
                            CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id                 INTEGER NOT NULL,
    guild_id                INTEGER,
    channel_id              INTEGER,
    parent_job_id           TEXT REFERENCES jobs(id) ON DELETE SET NULL,
    request_json            TEXT NOT NULL,
    attempts                INTEGER NOT NULL DEFAULT 0,
    error                   TEXT,
    created_at              REAL NOT NULL,
    started_at              REAL,
    finished_at             REAL,
    gpu_seconds             REAL,
    -- Where the result goes: the interaction's webhook while its token lives, else the channel.
    application_id          INTEGER,
    interaction_token       TEXT,
    interaction_created_at  REAL,
    delivered_at            REAL,
    result_message_id       INTEGER
);
CREATE INDEX jobs_status ON jobs (status, created_at);
CREATE INDEX jobs_user ON jobs (user_id, created_at);

-- History: every picture a job produced, with the infotext written into its PNG.
CREATE TABLE images (
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    infotext    TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);

-- What the bot still owes the broker of an ended job (bot.jobs.queue.broker_chores): its stored
-- result replaced by a bare marker of ``outcome``, the pictures it named deleted, and for a
-- cancelled job its message deleted from the jobs stream, so no worker renders it. Written in
-- the job's end's transaction and removed once the broker did it (or it was given up), so that
-- a broker away, or a stop of Easel meanwhile, leaves it to do at the next chance rather than
-- the member's prompt and pictures on the broker for a day. No foreign key: /forget-me erases
-- the job's row, and its chore must outlive it. Names no member.
CREATE TABLE broker_chores (
    job_id     TEXT PRIMARY KEY,
    outcome    TEXT NOT NULL CHECK (outcome IN ('done', 'failed', 'cancelled')),
    -- When the job ended (seconds since the epoch): past the broker's copies' lifetime there
    -- is nothing left to do.
    owed_since REAL NOT NULL
) WITHOUT ROWID;

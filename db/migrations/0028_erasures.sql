-- /forget-me's requests, one per member, journaled (in the transaction that finds none of
-- their jobs queued or running) before the first batch, and deleted once the member is told:
-- a stop in the middle leaves the row, and the next start finishes the erase and tells them.
-- ``asked_at``: the erase takes the member's jobs made up to then, not those made after (not
-- before the newest of their jobs' ``created_at``: the queue's clock never goes back, the
-- wall clock may). The interaction's token (it lives 15 minutes) answers the member where
-- they asked; past that they are told by direct message, and the token is blanked. The
-- counts are the whole request's, kept with each batch, so that a resumed or repeated run
-- answers for all of it.
CREATE TABLE erasures (
    user_id                 INTEGER PRIMARY KEY,
    asked_at                REAL NOT NULL,
    application_id          INTEGER,
    interaction_token       TEXT,
    jobs                    INTEGER NOT NULL DEFAULT 0,
    pictures                INTEGER NOT NULL DEFAULT 0,
    uploads                 INTEGER NOT NULL DEFAULT 0,
    posts                   INTEGER NOT NULL DEFAULT 0,
    ledger_rows_anonymised  INTEGER NOT NULL DEFAULT 0,
    ledger_rows_deferred    INTEGER NOT NULL DEFAULT 0,
    broker_copies_left      INTEGER NOT NULL DEFAULT 0 CHECK (broker_copies_left IN (0, 1))
);
-- The files and job ids of a request's batch, written with the batch's rows deleted and
-- removed once the files are deleted and the broker asked to drop its copies of the jobs: a
-- stop in between leaves them here (no row names them any more), and the run that finishes
-- the request deletes them and drops those copies.
CREATE TABLE erasure_files (
    user_id  INTEGER NOT NULL,
    path     TEXT NOT NULL,
    upload   INTEGER NOT NULL CHECK (upload IN (0, 1)),
    PRIMARY KEY (user_id, path)
) WITHOUT ROWID;
CREATE TABLE erasure_jobs (
    user_id  INTEGER NOT NULL,
    job_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, job_id)
) WITHOUT ROWID;

-- The direct messages that told members of their jobs a start ended for a server left out of
-- EASEL_ALLOWED_SERVERS (and of results withheld so): each job named in one, and the job whose
-- DM names it (``listed_in``, its own id for that job itself; the DM's nonce, so a DM sent
-- again after a restart is the same message), and when that DM went (``told_at``; NULL: not
-- yet, sent again by its job's delivery). Kept, so that a restart between two of a member's
-- deliveries neither names a job in a second DM nor leaves one named in none. They go with
-- their jobs.
CREATE TABLE unserved_listings (
    job_id     TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    listed_in  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    told_at    REAL
);
CREATE INDEX unserved_listings_listed_in ON unserved_listings (listed_in);

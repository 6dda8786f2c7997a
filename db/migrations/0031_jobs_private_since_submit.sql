-- A job submitted in the open whose maker turned /settings private_results on before its
-- delivery (db.jobs.make_undelivered_private): its result is theirs alone (``private`` set,
-- so the dashboard, buttons and /show leave it out), while its interaction's response stays
-- public in the channel, never edited into the result.
ALTER TABLE jobs ADD COLUMN private_since_submit INTEGER NOT NULL DEFAULT 0
    CHECK (private_since_submit IN (0, 1));

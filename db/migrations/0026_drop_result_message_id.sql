-- A job's result message is one of its posts (job_messages, 0013, which copied the column's
-- values): the column was written at delivery and read nowhere since. SQLite 3.35.5+
-- (db.database.OLDEST_SQLITE). It rewrites the jobs table once: about 3 s and a write-ahead log
-- the size of the table for 200,000 jobs, so the first start after the upgrade needs that much
-- free disk beside the database.
ALTER TABLE jobs DROP COLUMN result_message_id;

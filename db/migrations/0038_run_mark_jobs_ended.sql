-- How many queued or running jobs have ended (or been deleted) on this database (``bot.restores``):
-- counted by these triggers in the transaction of each end,
-- and copied by the running bot beside its mark in EASEL_DATA_DIR/easel.run once committed.
-- A backup taken during the current run holds that run's mark, but a count below the file's
-- once a job ended after it: put back by hand with easel.run left in place, it is still told
-- from the live database (its unfinished jobs may have been rendered and posted since).
ALTER TABLE run_mark ADD COLUMN jobs_ended INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER run_mark_job_ended AFTER UPDATE OF status ON jobs
WHEN OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running')
BEGIN
    UPDATE run_mark SET jobs_ended = jobs_ended + 1 WHERE only_row = 1;
END;

CREATE TRIGGER run_mark_job_deleted AFTER DELETE ON jobs
WHEN OLD.status IN ('queued', 'running')
BEGIN
    UPDATE run_mark SET jobs_ended = jobs_ended + 1 WHERE only_row = 1;
END;

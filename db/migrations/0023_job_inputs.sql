-- The pictures each job reads (init_image, mask_image, ControlNet and image prompt pictures):
-- uploads, or another job's stored result. Written with the job (trigger below) and gone with
-- it, so /forget-me and retention find who still reads a file by an index, instead of parsing
-- every job's request (seconds at 600,000 jobs, holding the only connection).
-- A request that is not JSON, or a ControlNet entry that is not an object, reads as no picture:
-- one odd row must not stop the migration (and the bot's start) or a job's insert.
-- (Each branch reads the jobs table itself: a shared CTE would be materialized, and the insert
-- trigger's lookup of one job would read them all.)
CREATE VIEW job_request_inputs (job_id, path) AS
    SELECT id, json_extract(request_json, '$.init_image') FROM jobs WHERE json_valid(request_json)
    UNION ALL SELECT id, json_extract(request_json, '$.mask_image') FROM jobs
        WHERE json_valid(request_json)
    UNION ALL SELECT jobs.id, json_extract(unit.value, '$.image')
        FROM jobs, json_each(
            CASE WHEN json_valid(jobs.request_json) THEN jobs.request_json END,
            '$.options.controlnet'
        ) AS unit
        WHERE unit.type = 'object'
    UNION ALL SELECT jobs.id, picture.value
        FROM jobs, json_each(
            CASE WHEN json_valid(jobs.request_json) THEN jobs.request_json END,
            '$.options.ipadapter.images'
        ) AS picture;
CREATE TABLE job_inputs (
    job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    path    TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
) WITHOUT ROWID;
INSERT OR IGNORE INTO job_inputs (job_id, path)
    SELECT job_id, path FROM job_request_inputs WHERE path IS NOT NULL;
CREATE INDEX job_inputs_path ON job_inputs (path);
-- A request is never rewritten (no UPDATE of request_json), so its inputs are written once.
CREATE TRIGGER job_inputs_journaled AFTER INSERT ON jobs BEGIN
    INSERT OR IGNORE INTO job_inputs (job_id, path)
        SELECT job_id, path FROM job_request_inputs
        WHERE job_id = NEW.id AND path IS NOT NULL;
END;
-- A start reads the ended jobs not yet delivered (to deliver them, and to settle a reservation a
-- dead process left open) without walking every ended job.
CREATE INDEX jobs_undelivered ON jobs (finished_at) WHERE delivered_at IS NULL;
-- The dashboard's usage of one server over one day, without reading every server's reservations.
CREATE INDEX quota_ledger_guild ON quota_ledger (guild_id, kind, at);

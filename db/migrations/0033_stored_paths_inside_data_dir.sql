-- The pictures and uploads Easel stores are named by their path inside EASEL_DATA_DIR
-- (images/<job id>/<n>.png, inputs/<name>), read against wherever the folder is now
-- (bot.jobs.stored_files): no longer by the path the folder had when they were written, which
-- a data folder moved or restored elsewhere left pointing at the old place (/show failed,
-- /forget-me left the files). Each stored path keeps its tail from its last
-- images/<16 hex digits>/ or inputs/ on; one that does not end so stays as it is, read as
-- before. Every table that names a file: images, job_inputs, erasure_files, and the requests'
-- picture fields (job_inputs lists every path a request names).
CREATE TEMP TABLE renamed_paths (old TEXT PRIMARY KEY, new TEXT NOT NULL) WITHOUT ROWID;
-- Each path split as <above>/<parent>/<file>, by names (rtrim with every character of a text
-- but '/' leaves the text up to its last '/').
WITH stored (path) AS (
    SELECT path FROM images
    UNION ALL SELECT path FROM job_inputs
    UNION ALL SELECT path FROM erasure_files
),
-- A path written on Windows is split at its backslashes too (char(92)), one for one, so the
-- positions below hold for the path as stored.
in_folder (path, folder) AS MATERIALIZED (
    SELECT path, rtrim(slashed, replace(slashed, '/', ''))
    FROM (SELECT path, replace(path, char(92), '/') AS slashed FROM stored)
),
split (path, file, parent) AS MATERIALIZED (
    SELECT path, substr(path, length(folder) + 1), substr(folder, 1, length(folder) - 1)
    FROM in_folder WHERE folder != '' AND length(folder) < length(path)
),
named (path, file, parent_name, above) AS MATERIALIZED (
    SELECT path, file, substr(parent, length(rtrim(parent, replace(parent, '/', ''))) + 1),
        rtrim(parent, replace(parent, '/', ''))
    FROM split
)
INSERT OR IGNORE INTO renamed_paths (old, new)
    SELECT path, CASE parent_name WHEN 'inputs' THEN 'inputs/' || file
        ELSE 'images/' || parent_name || '/' || file END
    FROM named
    WHERE parent_name = 'inputs'
        OR length(parent_name) = 16 AND parent_name NOT GLOB '*[^0-9a-f]*'
        AND (above = 'images/' OR substr(above, -8) = '/images/');
DELETE FROM renamed_paths WHERE new = old;
-- A request's picture fields (init_image, mask_image, each ControlNet unit's image, each
-- image prompt picture) that name a renamed path, numbered from 1 in each job.
CREATE TEMP TABLE renamed_fields AS
    SELECT jobs.id AS job_id, field.fullkey AS field, renamed_paths.new AS new,
        row_number() OVER (PARTITION BY jobs.id ORDER BY field.fullkey) AS n
    FROM jobs, json_tree(
        CASE WHEN json_valid(jobs.request_json) THEN jobs.request_json END
    ) AS field
    JOIN renamed_paths ON renamed_paths.old = field.value
    WHERE field.type = 'text'
        -- By path and key: SQLite quotes a key such as init_image in the full key.
        AND (field.path = '$' AND field.key IN ('init_image', 'mask_image')
            OR field.path GLOB '$.options.controlnet[[][0-9]]' AND field.key = 'image'
            OR field.path = '$.options.ipadapter.images')
        AND jobs.id IN (SELECT job_id FROM job_inputs
            WHERE path IN (SELECT old FROM renamed_paths));
CREATE INDEX temp.renamed_fields_of_job ON renamed_fields (job_id, n);
-- Rewritten one field at a time, the n-th on the (n-1)-th rewrite; each job's last kept.
CREATE TEMP TABLE rewritten_requests (job_id TEXT PRIMARY KEY, request_json TEXT NOT NULL);
WITH RECURSIVE rewritten (job_id, request_json, n) AS (
    SELECT id, request_json, 0 FROM jobs WHERE id IN (SELECT job_id FROM renamed_fields)
    UNION ALL SELECT rewritten.job_id, json_replace(rewritten.request_json, field, new),
        rewritten.n + 1
    FROM rewritten JOIN renamed_fields USING (job_id) WHERE renamed_fields.n = rewritten.n + 1
)
INSERT INTO rewritten_requests (job_id, request_json)
    SELECT job_id, request_json FROM rewritten WHERE NOT EXISTS (
        SELECT 1 FROM renamed_fields AS next
        WHERE next.job_id = rewritten.job_id AND next.n = rewritten.n + 1
    );
UPDATE jobs SET request_json = (
    SELECT request_json FROM rewritten_requests WHERE rewritten_requests.job_id = jobs.id
)
WHERE id IN (SELECT job_id FROM rewritten_requests);
UPDATE images SET path = (SELECT new FROM renamed_paths WHERE old = images.path)
WHERE path IN (SELECT old FROM renamed_paths);
UPDATE OR REPLACE job_inputs SET path = (SELECT new FROM renamed_paths WHERE old = job_inputs.path)
WHERE path IN (SELECT old FROM renamed_paths);
UPDATE OR REPLACE erasure_files
SET path = (SELECT new FROM renamed_paths WHERE old = erasure_files.path)
WHERE path IN (SELECT old FROM renamed_paths);
DROP TABLE renamed_paths;
DROP TABLE renamed_fields;
DROP TABLE rewritten_requests;

-- Each stored picture's decoded pixels, digested (bot.images.pixel_digest): a copy uploaded or
-- linked again under another name, or saved again without its PNG text, is still known as the
-- job's picture. Pictures stored before this migration have none (NULL) and are not recognised.
ALTER TABLE images ADD COLUMN pixel_digest BLOB;
-- A server's pictures with these pixels: the digest finds the jobs, their rows name the server.
CREATE INDEX images_pixel_digest ON images (pixel_digest, job_id) WHERE pixel_digest IS NOT NULL;
-- The one picture a job of several pictures (or a comparison) was posted as, its grid, and the
-- JPEG preview posted in place of a grid or picture too large for Discord, digested the same
-- way: that is the file a moderator deletes and a member saves from Discord. Gone with its job,
-- as its pictures' rows are.
CREATE TABLE posted_grids (
    job_id        TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    pixel_digest  BLOB NOT NULL,
    PRIMARY KEY (job_id, pixel_digest)
);
CREATE INDEX posted_grids_pixel_digest ON posted_grids (pixel_digest, job_id);

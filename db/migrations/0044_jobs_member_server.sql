-- /history's count ("N in all", ``db.history.count_of_jobs``) and a page turn's
-- (``count_of_jobs_around``) read the member's every job on jobs_user for its server: a table
-- row each, 28-55 ms for a member with 20,000 jobs, holding the shared connection; read from
-- this index alone, 0.7-2 ms. Its pages (by number or next to a shown one) seek to their server
-- too. An admission's insert costs no more that can be measured; retention's delete of 200
-- jobs some 3 ms more.
CREATE INDEX jobs_member_server ON jobs (user_id, guild_id, created_at);
-- The jobs table's statistics, this index's with them, written now on a database that has
-- jobs (``connect`` limits ANALYZE to ``ANALYSIS_LIMIT`` rows an index), not at the first
-- refresh; on an empty one it writes none. Either way the reads of the partial indexes of a
-- member's unfinished jobs (0024) and waiting results (0032) name theirs (INDEXED BY in
-- ``db.jobs``): without statistics this index looked as narrow, and, giving the order by
-- created_at, took /cancel's read (every job of the member's there, 42 ms at 20,000).
ANALYZE jobs;

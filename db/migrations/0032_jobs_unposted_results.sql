-- Plain /cancel's "the member's newest result not yet posted" (db.jobs.latest_unposted_result_of)
-- walked the member's every job on jobs_user: 55 ms for a member with 50,000 jobs, before the
-- reply, holding the shared connection. Planner statistics do not help (they see about 7 jobs a
-- member, not one heavy member). Only results waiting to be posted are indexed: a handful.
CREATE INDEX jobs_unposted_results ON jobs (user_id, guild_id, created_at)
    WHERE status = 'done' AND delivered_at IS NULL;

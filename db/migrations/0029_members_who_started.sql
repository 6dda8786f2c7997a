-- The admission's "has this member ever started a job" (db.jobs.members_who_started) walked
-- the member's every row on jobs_user up to a started one: a member who only submitted and
-- cancelled (free, and unbounded) made each of their submits read all of those rows, holding
-- the shared connection. Only jobs that started are indexed: a job whose render a crash
-- interrupted has its started_at cleared on the next start (requeue_running) but keeps its
-- attempt, so it counts too.
CREATE INDEX jobs_user_started ON jobs (user_id) WHERE started_at IS NOT NULL OR attempts > 0;

-- /forget-me anonymises the member's ledger rows (user_id 0), except those a quota window still
-- counts: they keep the id until this time (the end of the longest current window), so erasing
-- oneself never hands quota back. The pruning task anonymises them then.
ALTER TABLE quota_ledger ADD COLUMN anonymise_at REAL;
CREATE INDEX quota_ledger_anonymise ON quota_ledger (anonymise_at) WHERE anonymise_at IS NOT NULL;
-- Retention: settled ledger rows and delivered jobs older than EASEL_RETENTION_DAYS go.
CREATE INDEX quota_ledger_at ON quota_ledger (kind, at);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE delivered_at IS NOT NULL;
-- Interaction tokens are blanked once their 15 minutes are over.
CREATE INDEX jobs_live_token ON jobs (interaction_created_at) WHERE interaction_token IS NOT NULL;

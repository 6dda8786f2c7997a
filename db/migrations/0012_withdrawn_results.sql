-- A moderator deleted the job's result in Discord: its pictures are not shown or used again.
ALTER TABLE jobs ADD COLUMN withdrawn_at REAL;

-- Who first stopped a job (NULL: nobody): 'member', its maker's own cancel; 'moderator', a
-- moderator's own act on it (/easel-mod withdraw, their Cancel, an admin's cancel of another
-- member's job); 'imposed', a stop its maker was put under (a ban, the server's removal, a
-- deletion of its message or channel, the rules of now at its start). Written with the stop
-- (its ask, its end, a moderator's withdrawal), never over an earlier one: the first stop
-- wins, so a member's cancel followed by a moderator's withdrawal still reads as the
-- member's (db.jobs.StoppedBy).
ALTER TABLE jobs ADD COLUMN stopped_by TEXT
    CHECK (stopped_by IN ('member', 'moderator', 'imposed'));
-- Jobs stopped before this column keep the reading of then: a moderator's withdrawal is the
-- one whose audit row was written at its withdrawal's time (a member's cancel before it reads
-- as the moderator's there, as it did). Any other stop is left NULL, which reads as not a
-- moderator's, as it did.
UPDATE jobs SET stopped_by = 'moderator'
    WHERE status IN ('queued', 'running', 'cancelled') AND withdrawn_at IS NOT NULL
        AND withheld_why IS NULL
        AND EXISTS (
            SELECT 1 FROM settings_audit AS audit
            WHERE audit.guild_id = jobs.guild_id AND audit.at = jobs.withdrawn_at
                AND audit.setting = 'jobs withdrawn by a moderator'
        );

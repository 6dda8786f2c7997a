-- A request journaled again at start from forget-me.log (``db.erasures.ask_again``), not by its
-- member: its erase takes settings, presets and refusals only where dated up to ``asked_at``
-- (what the member saved since stays), also when it fails and the sweep of unfinished requests
-- finishes it. A member's own request (asked again over it too) takes them whatever their date.
ALTER TABLE erasures ADD COLUMN again INTEGER NOT NULL DEFAULT 0 CHECK (again IN (0, 1));

-- The member asked for this result to be shown to them only: every later path (the delivery
-- after the token expired, its buttons, /show) keeps it private.
ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;

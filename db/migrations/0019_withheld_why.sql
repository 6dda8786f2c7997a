-- Why a withdrawn job was withheld at delivery and refunded (the server's rules changed during
-- its render), as its maker was told; NULL: a moderator removed it (or it is not withdrawn).
ALTER TABLE jobs ADD COLUMN withheld_why TEXT;

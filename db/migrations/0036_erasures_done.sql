-- The /forget-me requests this database carried out: each member's latest, when they asked
-- (written as its journal row in ``erasures`` goes). A start erases again only the requests
-- EASEL_DATA_DIR/forget-me.log names that this table does not: those a database put back from
-- a backup taken before them undid. So a live database never erases again whatever its clocks
-- did. It names the members who asked, as forget-me.log does, and is kept as long.
CREATE TABLE erasures_done (
    user_id   INTEGER PRIMARY KEY,
    asked_at  REAL NOT NULL
);

-- The mark of the last process that started on this database (``bot.restores``): each start
-- writes a new random one here and in EASEL_DATA_DIR/easel.run, a file no backup holds. A
-- database whose mark that file does not name was put back from a backup: the jobs it holds
-- queued or running were rendered and posted long ago, and are not rendered again.
CREATE TABLE run_mark (
    only_row  INTEGER PRIMARY KEY CHECK (only_row = 1),
    run_id    TEXT NOT NULL
);

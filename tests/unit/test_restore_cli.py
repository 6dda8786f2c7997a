"""``easel restore`` and what ``easel run`` and ``easel doctor`` say of a data folder put back
wrong: the command line run in-process through its ``main``, on real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import bot.on_disk
import bot.restores
import db.backups
from bot import app
from bot.cli.main import main
from bot.restores import RUN_FILE_NAME, refuse_pictures_without_database, take_run_mark
from bot.settings import Settings, load_settings
from bot.single_instance import hold_data_dir
from db.database import connect, load_migrations
from tests.support.backups import SIDE_FILES, backed_up, died_writing, left_with_a_stale_wal
from tests.unit.test_cli import one_error_line
from tests.unit.test_restores import submitted
from tests.unit.test_settings import SETTING_NAMES

DATA = Path("data")
DATABASE = DATA / "easel.sqlite3"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env; the data folder ./data
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)  # ``main(["run"])`` makes the process's files private


async def _a_run_with_a_queued_job() -> str:
    """A bot's run on ./data that left a job queued; its id."""
    conn = await connect(DATABASE)
    try:
        await take_run_mark(conn, DATA, 0.0)
        return await submitted(conn, DATA, "a queued cat")
    finally:
        await conn.close()


def a_run_with_a_queued_job() -> str:
    return asyncio.run(_a_run_with_a_queued_job())


def rows_of(database: Path) -> list[tuple[object, ...]]:
    """Its jobs and its schema version, read as they are."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as raw:
        jobs = raw.execute("SELECT id, status, request_json FROM jobs ORDER BY id").fetchall()
        return [*jobs, *raw.execute("PRAGMA user_version").fetchall()]


def side_files() -> list[str]:
    return [suffix for suffix in SIDE_FILES if DATABASE.with_name(DATABASE.name + suffix).exists()]


def test_restore_puts_a_checked_backup_back_without_the_stale_wal_and_marks_it_put_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_id = a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    left_with_a_stale_wal(DATABASE, backup)
    assert side_files() == ["-wal", "-shm"]
    assert main(["restore", str(backup)]) == 0
    said = capsys.readouterr().out
    assert f"restored {backup} as {DATABASE} (schema version {len(load_migrations())}" in said
    assert side_files() == []
    assert rows_of(DATABASE) == rows_of(backup)
    assert (DATA / RUN_FILE_NAME).read_text() == ""  # the next start: put back

    async def next_start() -> list[str]:
        conn = await connect(DATABASE)  # not "malformed": no other database's WAL replayed
        try:
            lost = await take_run_mark(conn, DATA, 1.0)
            assert (await conn.execute_fetchall("PRAGMA integrity_check"))[0][0] == "ok"
            return lost
        finally:
            await conn.close()

    assert asyncio.run(next_start()) == [job_id]


def test_restore_keeps_the_database_it_replaces_whole_and_says_what_each_holds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A wrong backup put back is undone: the live database, its -wal's commits taken in,
    is kept as easel.sqlite3.replaced, and restoring that copy brings it back."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("old-backup.sqlite3"))
    a_run_with_a_queued_job()  # the live database moves on past the backup: 2 jobs
    died_writing(DATABASE)  # and holds commits only its -wal has
    live = rows_of(DATABASE)
    assert main(["restore", str(backup)]) == 0
    said = capsys.readouterr().out
    replaced = DATA / "easel.sqlite3.replaced"
    assert "integrity checked; 1 job, the newest made " in said
    assert "the database it replaced (2 jobs, the newest made " in said
    assert f"is kept as {replaced}: `easel restore {replaced}` puts it back" in said
    assert not replaced.with_name(f"{replaced.name}-wal").exists()  # one file, consistent
    assert rows_of(replaced) == live != rows_of(DATABASE)
    with contextlib.closing(sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)) as raw:
        assert raw.execute("SELECT COUNT(*) FROM filler").fetchone() == (300,)

    assert main(["restore", str(replaced)]) == 0  # the undo: the two swap places
    assert rows_of(DATABASE) == live
    assert rows_of(replaced) == rows_of(backup)


def test_a_second_restore_never_writes_over_the_copy_an_earlier_one_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two wrong backups in a row: the second is refused, so the good database kept as
    .replaced by the first is never written over; restoring .replaced still swaps back."""
    a_run_with_a_queued_job()
    wrong_1 = backed_up(DATABASE, Path("wrong-1.sqlite3"))
    a_run_with_a_queued_job()
    wrong_2 = backed_up(DATABASE, Path("wrong-2.sqlite3"))
    a_run_with_a_queued_job()
    good = rows_of(DATABASE)
    replaced = DATA / "easel.sqlite3.replaced"
    assert main(["restore", str(wrong_1)]) == 0
    capsys.readouterr()

    assert main(["restore", str(wrong_2)]) == 2
    said = one_error_line(capsys)
    assert f"an earlier restore's copy {replaced} (3 jobs, the newest made " in said
    assert f"`easel restore {replaced}` puts it back first; if it was right, move or " in said
    assert said.endswith("delete it; nothing replaced")
    assert rows_of(replaced) == good
    assert rows_of(DATABASE) == rows_of(wrong_1)

    assert main(["restore", str(replaced)]) == 0
    assert rows_of(DATABASE) == good
    assert rows_of(replaced) == rows_of(wrong_1)


def test_a_swap_back_cut_short_leaves_the_earlier_database_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`easel restore <db>.replaced` stopped after the live database's copy took .replaced's
    name: the earlier database (then only in its checked copy) goes back to .replaced."""
    a_run_with_a_queued_job()
    wrong = backed_up(DATABASE, Path("wrong.sqlite3"))
    a_run_with_a_queued_job()
    good = rows_of(DATABASE)
    replaced = DATA / "easel.sqlite3.replaced"
    assert main(["restore", str(wrong)]) == 0
    counted = db.backups.jobs_held

    def stopped_counting_the_staged_copy(path: Path) -> db.backups.JobsHeld | None:
        if path.name.endswith(".putting-back"):
            raise KeyboardInterrupt  # Ctrl-C while the checked copy's jobs are counted
        return counted(path)

    monkeypatch.setattr(db.backups, "jobs_held", stopped_counting_the_staged_copy)
    with pytest.raises(KeyboardInterrupt):
        main(["restore", str(replaced)])
    assert rows_of(replaced) == good
    assert rows_of(DATABASE) == rows_of(wrong)
    assert sorted(p.name for p in DATA.glob("easel.sqlite3.*")) == ["easel.sqlite3.replaced"]


# ``easel restore <db>.replaced`` in a process of its own, killed (as by a power cut or the OOM
# killer) as it marks the folder put back: after the live database's copy took .replaced's
# name, before the database it was putting back took the live one's.
_SWAP_BACK_KILLED = """
import os, signal, sys
import bot.restores
from bot.cli.main import main
bot.restores.mark_restored = lambda data_dir: os.kill(os.getpid(), signal.SIGKILL)
sys.exit(main(["restore", sys.argv[1]]))
"""


def test_a_swap_back_killed_leaves_the_database_it_was_putting_back_where_no_start_deletes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Killed mid-swap, the database being put back is only in its checked copy: no start
    deletes it, even once .replaced (then the live database's copy) is deleted; a swap back
    again is refused rather than writing over it; doctor's remedy puts it in place."""
    a_run_with_a_queued_job()
    wrong = backed_up(DATABASE, Path("wrong.sqlite3"))
    a_run_with_a_queued_job()
    good = rows_of(DATABASE)
    assert main(["restore", str(wrong)]) == 0
    replaced = DATA / "easel.sqlite3.replaced"
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run(
        [sys.executable, "-c", _SWAP_BACK_KILLED, str(replaced)], env=environment, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert rows_of(replaced) == rows_of(DATABASE) != good
    putting_back = DATA / "easel.sqlite3.putting-back"
    capsys.readouterr()
    assert main(["restore", str(replaced)]) == 2
    assert one_error_line(capsys).endswith(f"then delete {putting_back.name}; nothing replaced")
    replaced.unlink()  # "a copy of the live database": what an operator may well do

    bot.restores.tidy_restore_copies(DATABASE)  # the next start's
    copies = sorted(DATA.glob("easel.sqlite3.*"))
    assert [(copy, rows_of(copy)) for copy in copies] == [(putting_back, good)]
    main(["doctor"])
    [warned] = [line for line in capsys.readouterr().out.splitlines() if "restore copy" in line]
    assert warned.startswith(f"[WARN] restore copy: {putting_back} (the database an `easel ")
    assert warned.endswith(f"then `easel restore {putting_back}`, then delete {putting_back.name}")
    assert main(["restore", str(putting_back)]) == 0  # the remedy
    assert rows_of(DATABASE) == good


# ``easel restore`` in a process of its own, killed once its copy of the live database is
# written under its temporary name (``bot.restores.being_written``), before it took .replaced's.
_KILLED_COPYING = """
import os, signal, sys
import db.backups
from bot.cli.main import main
copied = db.backups.keep_copy
def killed_once_copied(database, to):
    copied(database, to)
    os.kill(os.getpid(), signal.SIGKILL)
db.backups.keep_copy = killed_once_copied
sys.exit(main(["restore", sys.argv[1]]))
"""


def test_every_copy_a_killed_restore_leaves_is_warned_of_and_the_garbage_deleted_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore killed while copying the live database leaves that copy (members' data out of
    /forget-me's reach) beside the backup's: doctor warns of each, as of a -wal of a .replaced
    deleted without it; the next start deletes them, the live database (which the copy copied)
    untouched."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    live = rows_of(DATABASE)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_COPYING, str(backup)], env=environment, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    copying = DATA / "easel.sqlite3.replaced.new"
    orphan_wal = DATA / "easel.sqlite3.replaced-wal"
    orphan_wal.write_bytes(b"a member's data")
    assert rows_of(copying) == live
    capsys.readouterr()
    main(["doctor"])
    warned = [line for line in capsys.readouterr().out.splitlines() if "restore copy" in line]
    assert [line.split(" (")[0] for line in warned] == [
        f"[WARN] restore copy: {DATA / 'easel.sqlite3.restoring'}",  # the backup's checked copy
        f"[WARN] restore copy: {copying}",
        f"[WARN] restore copy: {orphan_wal}",
    ]
    assert all(line.endswith(": the next start deletes it") for line in warned)

    bot.restores.tidy_restore_copies(DATABASE)  # the next start's
    assert sorted(p.name for p in DATA.glob("easel.sqlite3.*")) == []
    assert rows_of(DATABASE) == live
    main(["doctor"])
    assert "restore copy" not in capsys.readouterr().out


def test_a_folder_sync_failing_leaves_no_replaced_copy_that_blocks_the_next_restore(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    a_run_with_a_queued_job()
    real = bot.on_disk.put_on_disk

    def failing(path: Path) -> None:
        if path.is_dir():
            raise OSError(5, "Input/output error", str(path))
        real(path)

    monkeypatch.setattr(bot.on_disk, "put_on_disk", failing)
    assert main(["restore", str(backup)]) == 2
    said = one_error_line(capsys)
    assert said.endswith("nothing replaced"), said
    assert not (DATA / "easel.sqlite3.replaced").exists()
    monkeypatch.setattr(bot.on_disk, "put_on_disk", real)
    assert main(["restore", str(backup)]) == 0


def test_a_swap_back_cut_short_after_the_wal_moved_leaves_replaced_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    a_run_with_a_queued_job()
    assert main(["restore", str(backup)]) == 0
    good = rows_of(DATA / "easel.sqlite3.replaced")
    capsys.readouterr()
    died_writing(DATABASE)
    real_copy = db.backups.copy_database

    def copy(source: Path, to: Path) -> None:
        if source.name == "easel.sqlite3":  # SQLite cannot read the live one
            error = sqlite3.DatabaseError("file is not a database")
            error.sqlite_errorcode = sqlite3.SQLITE_NOTADB  # type: ignore[attr-defined]
            raise error
        real_copy(source, to)

    monkeypatch.setattr(db.backups, "copy_database", copy)
    real = bot.on_disk.put_on_disk

    def failing(path: Path) -> None:
        if path.name.endswith(".replaced.new"):
            raise OSError(5, "Input/output error", str(path))
        real(path)

    monkeypatch.setattr(bot.on_disk, "put_on_disk", failing)
    assert main(["restore", str(DATA / "easel.sqlite3.replaced")]) == 2
    assert one_error_line(capsys).endswith(f"{DATA / 'easel.sqlite3.replaced'} is as it was")
    assert (
        rows_of(DATA / "easel.sqlite3.replaced") == good
    )  # on main: "database disk image is malformed"


@contextlib.contextmanager
def files_limited_to(size: int) -> Iterator[None]:
    """No file may grow past ``size`` bytes (a write past it fails, EFBIG): a full disk."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_full_disk_while_restoring_the_replaced_copy_leaves_that_copy_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Undoing with .replaced, the live database's copy finds no room: the restore is
    refused and .replaced, the only copy of the good database, is as it was."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    a_run_with_a_queued_job()
    assert main(["restore", str(backup)]) == 0
    replaced = DATA / "easel.sqlite3.replaced"
    good = rows_of(replaced)
    with contextlib.closing(sqlite3.connect(DATABASE)) as live:  # the live one grows large
        live.execute("CREATE TABLE big (x BLOB)")
        live.executemany("INSERT INTO big VALUES (randomblob(4000))", [()] * 300)
        live.commit()
    assert DATABASE.stat().st_size > 2 * replaced.stat().st_size + 256 * 1024
    capsys.readouterr()

    with files_limited_to(replaced.stat().st_size + 256 * 1024):
        assert main(["restore", str(replaced)]) == 2
    said = one_error_line(capsys)
    assert f"no copy of {DATABASE} could be kept as {replaced} (" in said
    assert said.endswith(f"nothing replaced; {replaced} is as it was")
    assert rows_of(replaced) == good
    assert not list(DATA.glob("*.new*"))


def test_a_full_disk_is_never_told_as_a_database_sqlite_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The live database's SQLite copy finds no room, though its files one by one would fit:
    the restore is refused as a copy not written, not done with those files kept as they are
    and SQLite said unable to read them."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    died_writing(DATABASE)  # the live database's commits in its -wal, its file small
    wal = DATABASE.with_name(f"{DATABASE.name}-wal").stat().st_size
    largest = max(DATABASE.stat().st_size, wal)
    with files_limited_to(largest + 4096):
        assert main(["restore", str(backup)]) == 2
    said = one_error_line(capsys)
    assert "the copy could not be written" in said
    assert said.endswith("nothing replaced")
    assert not (DATA / "easel.sqlite3.replaced").exists()


def test_the_database_put_back_is_private_to_easels_user_whatever_the_shells_umask() -> None:
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    os.umask(0o022)  # a shell's usual; the fixture puts the test's back
    assert main(["restore", str(backup)]) == 0
    for made in (DATABASE, DATA / RUN_FILE_NAME):
        assert made.stat().st_mode & 0o077 == 0, (made, oct(made.stat().st_mode))


def test_a_restore_stopped_before_it_marked_the_folder_put_back_replaced_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The folder is marked put back before the backup takes the database's place: a stop
    between the two (here the mark's write refused) leaves the live database as it was, so a
    backup taken during this run (holding this run's mark) is never taken for the folder's own
    and its queued jobs rendered and posted again."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    asyncio.run(_a_run_with_a_queued_job())  # the live database moves on past the backup
    live = rows_of(DATABASE)

    def power_cut(data_dir: Path) -> None:
        raise KeyboardInterrupt("the power was cut")

    monkeypatch.setattr(bot.restores, "mark_restored", power_cut)
    with pytest.raises(KeyboardInterrupt):
        main(["restore", str(backup)])
    assert rows_of(DATABASE) == live != rows_of(backup)


def test_restore_is_refused_while_a_bot_holds_the_data_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    before = DATABASE.read_bytes(), (DATA / RUN_FILE_NAME).read_text()
    held = hold_data_dir(DATA)
    try:
        assert main(["restore", str(backup)]) == 2
    finally:
        held.release()
    line = one_error_line(capsys)
    assert line.startswith("easel restore: error: another Easel is running on EASEL_DATA_DIR=")
    assert (DATABASE.read_bytes(), (DATA / RUN_FILE_NAME).read_text()) == before


def _text_file(path: Path) -> None:
    path.write_text("not a database, a note\n" * 100)


def _overwritten(path: Path) -> None:
    """An Easel database whose pages past the first were overwritten."""
    backed_up(DATABASE, path)
    with path.open("r+b") as file:
        file.seek(4096 * 3)
        file.write(b"\xa5" * 4096 * 4)


def _index_astray(path: Path) -> None:
    """An Easel database that reads, yet one of its indexes disagrees with its table."""
    backed_up(DATABASE, path)
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA writable_schema = ON")
        raw.execute(
            "UPDATE sqlite_master SET sql = 'CREATE INDEX quota_ledger_usage"
            " ON quota_ledger (at, kind, guild_id, user_id)' WHERE name = 'quota_ledger_usage'"
        )
        raw.commit()


def _empty_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE notes (text TEXT)")


def _newer(path: Path) -> None:
    backed_up(DATABASE, path)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 999")


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (_text_file, "cannot be read as an SQLite database (file is not a database)"),
        (_overwritten, "cannot be read as an SQLite database (database disk image is malformed)"),
        (_index_astray, "it is damaged (integrity check: row 1 missing from index"),
        (_empty_sqlite, "it is no Easel database (schema version 0"),
        (_newer, "database schema is version 999 but this Easel knows only"),
    ],
    ids=["not-sqlite", "overwritten", "index-astray", "not-easel", "newer"],
)
def test_restore_refuses_a_backup_it_cannot_use_and_replaces_nothing(
    capsys: pytest.CaptureFixture[str], make: Callable[[Path], None], said: str
) -> None:
    a_run_with_a_queued_job()
    backup = Path("backup.sqlite3")
    make(backup)
    before = DATABASE.read_bytes(), (DATA / RUN_FILE_NAME).read_text()
    assert main(["restore", str(backup)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"easel restore: error: BACKUP_FILE '{backup}': ")
    assert said in line and line.endswith("; nothing replaced")
    assert (DATABASE.read_bytes(), (DATA / RUN_FILE_NAME).read_text()) == before
    assert sorted(p.name for p in DATA.iterdir()) == sorted(
        ["easel.sqlite3", RUN_FILE_NAME, "easel.pid"]
    )


def test_restore_names_a_missing_backup(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restore", "nowhere.sqlite3"]) == 2
    assert one_error_line(capsys) == (
        "easel restore: error: BACKUP_FILE 'nowhere.sqlite3' is not a file"
    )


def pictures_put_back_first() -> None:
    for folder, name in (("images/0123456789abcdef", "0.png"), ("inputs", "up.png")):
        (DATA / folder).mkdir(parents=True)
        (DATA / folder / name).write_bytes(b"\x89PNG")


async def _start_opening_the_database(settings: Settings, **_: object) -> None:
    """``bot.app``'s start up to the database (its setup hook's first steps), without
    Discord."""
    settings.require_data_dir()
    refuse_pictures_without_database(
        settings.database_path, (settings.images_dir, settings.inputs_dir)
    )
    await (await connect(settings.database_path)).close()


def test_run_and_doctor_refuse_pictures_put_back_before_their_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pictures_put_back_first()
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setattr(app, "run", _start_opening_the_database)
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert line == (
        f"easel run: error: {DATA} holds 2 stored picture or upload file(s) in images/ and "
        "inputs/ but no easel.sqlite3: a new database would delete them as no job's; put "
        "easel.sqlite3 back first (`easel restore BACKUP_FILE`), or empty images/ and inputs/ "
        "to start afresh"
    )
    assert not DATABASE.exists()
    assert main(["doctor"]) == 1
    assert f"[ERR] database: {line.removeprefix('easel run: error: ')}" in capsys.readouterr().out


def test_doctor_says_an_empty_data_folder_gets_its_database_at_the_first_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (DATA / "images").mkdir(parents=True)  # folders without files: nothing to lose
    main(["doctor"])
    assert f"[ok ] database: {DATABASE} will be created at the first start" in (
        capsys.readouterr().out
    )


def test_run_and_doctor_name_the_stale_wal_of_a_damaged_database_and_the_remedy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    left_with_a_stale_wal(DATABASE, backup)
    remedy = (
        "if it was just put back from a backup, the likely cause is an old easel.sqlite3-wal "
        "left beside it, which SQLite has now merged in; stop Easel and put the backup back "
        "with `easel restore BACKUP_FILE`, which removes the -wal and -shm first"
    )
    assert main(["doctor"]) == 1  # reads only: the -wal stays
    out = capsys.readouterr().out
    assert f"[ERR] database: {DATABASE} is damaged (database disk image is malformed): " in out
    assert remedy in out
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    monkeypatch.setattr(app, "run", _start_opening_the_database)
    assert main(["run"]) == 2
    line = one_error_line(capsys)
    assert line == (
        f"easel run: error: {DATABASE} is damaged (database disk image is malformed): {remedy}"
    )
    assert main(["restore", str(backup)]) == 0  # the remedy works
    asyncio.run(_start_opening_the_database(load_settings()))


def test_doctor_warns_of_each_copy_a_restore_left_and_says_what_to_do_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database a restore replaced, the checked copy a swap back cut short was putting
    back, and the staged copy of a backup hold members' data out of /forget-me's and
    retention's reach: doctor names each, and what to do."""
    a_run_with_a_queued_job()
    backup = backed_up(DATABASE, Path("backup.sqlite3"))
    assert main(["restore", str(backup)]) == 0
    replaced = DATA / "easel.sqlite3.replaced"
    putting_back, staged = DATA / "easel.sqlite3.putting-back", DATA / "easel.sqlite3.restoring"
    for copy in (putting_back, staged):
        backed_up(DATABASE, copy)
    capsys.readouterr()
    main(["doctor"])
    warned = [line for line in capsys.readouterr().out.splitlines() if "restore copy" in line]
    assert len(warned) == 3, warned
    assert warned[0].startswith(f"[WARN] restore copy: {replaced} (the database an `easel ")
    assert "holds members' data that /forget-me and retention do not reach" in warned[0]
    assert f"if it was wrong, `easel restore {replaced}` puts it back" in warned[0]
    assert warned[1].startswith(f"[WARN] restore copy: {putting_back} (the database an `easel ")
    assert "and may be its only copy: move easel.sqlite3.replaced, if it is there, " in warned[1]
    assert warned[2].startswith(f"[WARN] restore copy: {staged} (a copy of a backup, left by ")
    assert warned[2].endswith("the next start deletes it")
    assert putting_back.exists() and staged.exists()  # doctor only reads

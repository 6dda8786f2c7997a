"""``easel restore BACKUP_FILE``: a backup of the database put back in EASEL_DATA_DIR, safely.

Never beside a running bot (the folder's lock, ``bot.single_instance``); the backup checked
whole before anything is replaced; the -wal and -shm of the database it replaces removed first
(SQLite would replay another database's WAL into it: "database disk image is malformed"); and
the next start told that its database was put back (``bot.restores.mark_restored``), so the
jobs it held queued or running are not rendered and posted again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.settings import Settings

if TYPE_CHECKING:
    from db.backups import JobsHeld


class RestoreRefused(Exception):
    """Nothing was replaced: the one line says why."""


def restore(backup: Path, settings: Settings) -> str:
    """Put ``backup`` in place of the database; the line that says what was done."""
    from bot.on_disk import put_on_disk
    from bot.restores import (
        mark_restored,
        putting_back_copy,
        putting_back_problem,
        replaced_copy,
        staged_copy,
    )
    from bot.single_instance import DataDirInUse, hold_data_dir
    from db.backups import BackupUnusable, copy_checked, files_beside, jobs_held

    database = settings.database_path
    if not backup.is_file():
        raise RestoreRefused(f"BACKUP_FILE {str(backup)!r} is not a file")
    if database.exists() and backup.resolve() == database.resolve():
        raise RestoreRefused(f"BACKUP_FILE {str(backup)!r} is the database itself: name a backup")
    settings.require_data_dir()
    try:
        lock = hold_data_dir(settings.data_dir)
    except DataDirInUse as error:
        raise RestoreRefused(str(error)) from None  # stop it first
    staged, replaced = staged_copy(database), replaced_copy(database)
    # Restoring .replaced itself: once the live database's copy is renamed over it, the checked
    # copy (by then ``putting_back_copy``) is the earlier database's only one until in place.
    swapping = backup.resolve() == replaced.resolve()
    try:
        if swapping and (left_before := putting_back_problem(database)) is not None:
            raise RestoreRefused(f"{left_before}; nothing replaced")  # never written over
        if replaced.exists() and not swapping:
            # The only copy of what an earlier restore replaced: never written over.
            raise RestoreRefused(
                f"an earlier restore's copy {replaced} ({_held_text(jobs_held(replaced))}) is "
                f"still there: if that restore was wrong, `easel restore {replaced}` puts it back"
                " first; if it was right, move or delete it; nothing replaced"
            )
        staged.unlink(missing_ok=True)
        try:
            version = copy_checked(backup, staged)
        except BackupUnusable as error:
            named = f"BACKUP_FILE {str(backup)!r}"
            raise RestoreRefused(f"{named}: {error}; nothing replaced") from None
        kept = ""
        if database.exists():  # a wrong backup put back is then undone by restoring this copy
            try:
                if swapping:  # under a name no start deletes, on disk before .replaced changes
                    put_on_disk(staged)
                    staged = staged.replace(putting_back_copy(database))
                    put_on_disk(staged.parent)
                unread = _keep_copy_whole(database, replaced)
            except OSError as error:
                if not swapping:  # no earlier restore's copy: one half made is no copy
                    for path in (replaced, *files_beside(replaced)):
                        path.unlink(missing_ok=True)
                left = f"; {replaced} is as it was" if swapping else ""
                raise RestoreRefused(
                    f"no copy of {database} could be kept as {replaced} ({error}); nothing "
                    f"replaced{left}"
                ) from None
            how = "" if unread is None else f", its files as they were (SQLite: {unread})"
            kept = (
                f"; the database it replaced ({_held_text(jobs_held(replaced))}) is kept as "
                f"{replaced}{how}: `easel restore {replaced}` puts it back; delete it once "
                "this restore is right (it holds members' data)"
            )
        held = _held_text(jobs_held(staged))
        # Marked first: a stop between the two then ends the replaced database's jobs at the
        # next start (the operator was replacing it), never renders the backup's again.
        mark_restored(settings.data_dir)
        for path in files_beside(database):
            path.unlink(missing_ok=True)
        staged.replace(database)
    finally:
        if staged == putting_back_copy(database) and staged.exists():
            for path in files_beside(replaced):  # staged took them in: one left is the live one's
                path.unlink(missing_ok=True)
            staged.replace(replaced)  # cut short: the earlier database back where it was
        staged.unlink(missing_ok=True)
        lock.release()
    return (
        f"restored {backup} as {database} (schema version {version}, integrity checked; "
        f"{held}){kept}; the next `easel run` ends the jobs it holds queued or running, "
        "refunded, without rendering or posting them; put images/ and inputs/ back from the "
        "same backup"
    )


def _keep_copy_whole(database: Path, to: Path) -> str | None:
    """``keep_copy`` to ``to`` whole, or ``to`` left as it was: written under a temporary name
    beside it, put on disk, then renamed over it (``to`` may be the backup being restored)."""
    from bot.on_disk import put_on_disk
    from bot.restores import being_written
    from db.backups import files_beside, keep_copy

    writing = being_written(to)
    beside = files_beside(writing)
    try:
        for path in (writing, *beside):
            path.unlink(missing_ok=True)
        unread = keep_copy(database, writing)
        for path in files_beside(to):
            path.unlink(missing_ok=True)
        wal = Path(f"{writing}-wal")
        if wal.exists():  # SQLite could not read it: its -wal kept beside, put in place first
            put_on_disk(wal)
            wal.replace(f"{to}-wal")
        put_on_disk(writing)
        writing.replace(to)
        put_on_disk(to.parent)
    finally:
        for path in (writing, *beside):
            path.unlink(missing_ok=True)
    return unread


def _held_text(held: JobsHeld | None) -> str:
    """What a database holds, in words: "12 jobs, the newest made 2026-11-03 14:05 UTC"."""
    if held is None:
        return "its jobs cannot be read"
    if held.newest is None:
        return "no jobs"
    newest = datetime.fromtimestamp(held.newest, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{held.count:,} job{'s' if held.count != 1 else ''}, the newest made {newest}"

"""``easel restore BACKUP_FILE``: a backup of the database put back in EASEL_DATA_DIR, safely.

Never beside a running bot (the folder's lock, ``bot.single_instance``); the backup checked
whole before anything is replaced; the -wal and -shm of the database it replaces removed first
(SQLite would replay another database's WAL into it: "database disk image is malformed"); and
the next start told that its database was put back (``bot.restores.mark_restored``), so the
jobs it held queued or running are not rendered and posted again."""

from __future__ import annotations

from pathlib import Path

from bot.settings import Settings

# What SQLite keeps beside a database and replays into it at the next open.
_BESIDE_A_DATABASE = ("-wal", "-shm", "-journal")


class RestoreRefused(Exception):
    """Nothing was replaced: the one line says why."""


def restore(backup: Path, settings: Settings) -> str:
    """Put ``backup`` in place of the database; the line that says what was done."""
    from bot.restores import mark_restored
    from bot.single_instance import DataDirInUse, hold_data_dir
    from db.backups import BackupUnusable, copy_checked

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
    staged = database.with_name(f"{database.name}.restoring")
    try:
        staged.unlink(missing_ok=True)
        try:
            version = copy_checked(backup, staged)
        except BackupUnusable as error:
            named = f"BACKUP_FILE {str(backup)!r}"
            raise RestoreRefused(f"{named}: {error}; nothing replaced") from None
        # Marked first: a stop between the two then ends the replaced database's jobs at the
        # next start (the operator was replacing it), never renders the backup's again.
        mark_restored(settings.data_dir)
        for suffix in _BESIDE_A_DATABASE:
            database.with_name(f"{database.name}{suffix}").unlink(missing_ok=True)
        staged.replace(database)
    finally:
        staged.unlink(missing_ok=True)
        lock.release()
    return (
        f"restored {backup} as {database} (schema version {version}, integrity checked); the "
        "next `easel run` ends the jobs it holds queued or running, refunded, without "
        "rendering or posting them; put images/ and inputs/ back from the same backup"
    )

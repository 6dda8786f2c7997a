"""The SQLite connection: WAL, foreign keys, and numbered migrations tracked by ``user_version``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import random
import re
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_Done = TypeVar("_Done")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """Every ``db/migrations/NNNN_name.sql``, in order; numbers must run 1, 2, 3... without gaps."""
    found: list[Migration] = []
    for entry in resources.files("db.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"migration {migration.name} breaks the sequence: expected {expected:04d}"
            )
    return found


class SchemaTooNew(RuntimeError):
    """The database is of a newer Easel; the message names both versions and EASEL_DATA_DIR."""


# SQLite's "database or disk is full", and the "disk I/O error" of opening a database in WAL
# mode on a full disk (its shared-memory file cannot be made).
_NO_ROOM = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_SHMSIZE})
# A file's write that found no room: the disk full, or the user's disk quota used up (EDQUOT:
# the same for Easel, though the disk's free space, as read at admission, may look ample).
_NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# SQLite's "disk I/O error" of a write: SQLite says SQLITE_FULL for ENOSPC alone, and a used-up
# disk quota (EDQUOT) is one of these, whose errno Python does not show (``_refused_room``).
_WRITE_FAILED = frozenset(
    {sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC, sqlite3.SQLITE_IOERR_TRUNCATE}
)
# Two pages, as SQLite writes: what ``_refused_room`` asks of a database's folder (a WAL frame,
# a page and its header, can straddle two of the disk's blocks).
_PROBE_BYTES = 2 * 4096
# How long ``_refused_room`` waits for the folders' answer: milliseconds on a healthy disk; a
# failing disk or a hung network mount may hold the write for good: storage slow to answer
# (``SlowToAnswer``), told to the member as such.
ROOM_PROBE_LIMIT_S = 2.0
# The folder of each database ``connect`` opened, while it is open (``_refused_room``).
_database_folders: weakref.WeakKeyDictionary[aiosqlite.Connection, Path] = (
    weakref.WeakKeyDictionary()
)
# The probe of each set of folders while it runs, on its own thread: later askers wait on it
# (a disk that hangs one holds one thread, not one per failed write).
_probes_running: dict[tuple[Path, ...], concurrent.futures.Future[OSError | None]] = {}
# The probes an asker already found past their time, logged at ERROR: one ERROR a hang, not one
# a failed write while it lasts (a probe ended is dropped with its last reference).
_probes_reported: weakref.WeakSet[concurrent.futures.Future[OSError | None]] = weakref.WeakSet()
_probes_lock = threading.Lock()


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then the one it was raised from or while handling, and so on."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


class SlowToAnswer(Exception):
    """A write SQLite failed with a bare I/O error whose folders gave no answer to a page's
    write within ``ROOM_PROBE_LIMIT_S`` (a failing disk, a hung network mount): neither room
    found lacking nor a write that fails at once, but storage too slow to use now."""


async def storage_failure(
    error: BaseException, *, folders: Iterable[Path] = ()
) -> sqlite3.Error | OSError | SlowToAnswer | None:
    """``error``, or the one it was raised while handling, that is a write that found no room:
    SQLite's (``_NO_ROOM``; or its failed write where a database's folder, an open one's or
    one of ``folders``, now refuses a page for want of room, that refusal: ``_refused_room``)
    or a file's (``_NO_ROOM_ERRNOS``); else ``SlowToAnswer`` when a folder asked so held the
    page's write past its time; None when there is neither."""
    slow: SlowToAnswer | None = None
    for seen in causes(error):
        if isinstance(seen, sqlite3.Error) and seen.sqlite_errorcode in _NO_ROOM:
            return seen
        if (
            isinstance(seen, sqlite3.Error)
            and seen.sqlite_errorcode in _WRITE_FAILED
            and slow is None  # the folders, asked again, would hold the write again
        ):
            refused = await _refused_room(folders, seen)
            if isinstance(refused, OSError):
                return refused
            slow = refused
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM_ERRNOS:
            return seen
    return slow


async def found_no_room(
    error: BaseException, *, folders: Iterable[Path] = ()
) -> sqlite3.Error | OSError | None:
    """``storage_failure``'s write that found no room; None when there is none (a folder
    slow to answer included: whether it has room is not known)."""
    failure = await storage_failure(error, folders=folders)
    return None if isinstance(failure, SlowToAnswer) else failure


def failed_writing(error: BaseException) -> bool:
    """Whether ``error``, or one it was raised while handling, is SQLite's failed write (no
    room, or a write, sync or truncate refused): a copy's side, never a read of its source."""
    return any(
        isinstance(seen, sqlite3.Error) and seen.sqlite_errorcode in _NO_ROOM | _WRITE_FAILED
        for seen in causes(error)
    )


async def is_out_of_room(error: BaseException, *, folders: Iterable[Path] = ()) -> bool:
    """Whether ``error`` is, or was raised while handling, a write that found no room
    (``found_no_room``)."""
    return await found_no_room(error, folders=folders) is not None


async def _refused_room(
    folders: Iterable[Path], failed: sqlite3.Error
) -> OSError | SlowToAnswer | None:
    """Whether a database's folder (an open one's, or one of ``folders``) refuses a page's
    write (and its sync) for want of room, as SQLite's write that ``failed`` with a bare I/O
    error may have been refused (a used-up disk quota): that refusal, naming the folder; None
    when each takes it (a real I/O error, or room made since); ``SlowToAnswer`` when they give
    no answer within ``ROOM_PROBE_LIMIT_S``, logged at ERROR by the first asker to find that
    probe past its time (every write fails while the disk hangs: the operator must look).
    Off the event loop: the disk has just failed a write."""
    asked = tuple(sorted({*_database_folders.values(), *(f.resolve() for f in folders)}))
    if not asked:
        return None
    probe = _probe_running(asked)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(probe), ROOM_PROBE_LIMIT_S)
    except TimeoutError:
        where = ", ".join(map(str, asked))
        with _probes_lock:
            first = probe not in _probes_reported
            _probes_reported.add(probe)
        if first:
            log.error(
                "%s: SQLite's write failed (%s) and a page's write there gave no answer in %s s:"
                " the storage is hung or failing, every write fails while it lasts (members "
                "are told Easel's storage is slow to answer); check the disk's health (dmesg, "
                "smartctl) or the network mount it is on",
                where,
                failed,
                ROOM_PROBE_LIMIT_S,
            )
        else:
            log.warning(
                "%s: SQLite's write failed (%s); the page's write reported at ERROR still gives"
                " no answer: read as storage slow to answer",
                where,
                failed,
            )
        return SlowToAnswer(f"{where}: no answer in {ROOM_PROBE_LIMIT_S} s")


def _probe_running(folders: tuple[Path, ...]) -> concurrent.futures.Future[OSError | None]:
    """The probe of ``folders``: the one running, else one started on its own thread (a
    daemon's: a write the disk holds must not hold up the process's end)."""
    with _probes_lock:
        if (running := _probes_running.get(folders)) is not None:
            return running
        probe: concurrent.futures.Future[OSError | None] = concurrent.futures.Future()
        probe.set_running_or_notify_cancel()  # an asker's time limit must not cancel it
        _probes_running[folders] = probe
    threading.Thread(
        target=_probe, args=(folders, probe), name="easel-room-probe", daemon=True
    ).start()
    return probe


def _probe(folders: tuple[Path, ...], probe: concurrent.futures.Future[OSError | None]) -> None:
    try:
        probe.set_result(_first_refusal(folders))
    except BaseException as error:  # an asker waits on it: each answers
        probe.set_exception(error)
    finally:
        with _probes_lock:
            _probes_running.pop(folders, None)


def _first_refusal(folders: tuple[Path, ...]) -> OSError | None:
    for folder in folders:
        try:
            _write_a_page(folder)
        except OSError as refused:
            if refused.errno in _NO_ROOM_ERRNOS:
                return OSError(refused.errno, refused.strerror, str(folder))
    return None


def _write_a_page(folder: Path) -> None:
    with tempfile.TemporaryFile(dir=folder) as probe:
        probe.write(bytes(_PROBE_BYTES))
        probe.flush()
        os.fsync(probe.fileno())


async def schema_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def pending_migrations(version: int) -> list[Migration]:
    """The migrations a database at schema ``version`` still needs (``SchemaTooNew`` when it
    is of a newer Easel)."""
    migrations = load_migrations()
    if version > len(migrations):
        raise SchemaTooNew(
            f"database schema is version {version} but this Easel knows only {len(migrations)}: "
            "upgrade Easel or point EASEL_DATA_DIR at another database"
        )
    return migrations[version:]


async def migrate(conn: aiosqlite.Connection) -> int:
    """Apply pending migrations, each in its own transaction; returns the resulting version."""
    current = await schema_version(conn)
    pending = pending_migrations(current)
    if pending:
        # An upgrade has no way back (an older Easel refuses the newer schema): the log says when.
        log.info("migrating schema %d -> %d", current, pending[-1].version)
    for migration in pending:
        # executescript commits first; BEGIN makes the migration and its version bump atomic.
        await conn.executescript(
            f"BEGIN;\n{migration.sql}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
        )
    return await schema_version(conn)


# RETURNING and DROP COLUMN came in 3.35.0; 3.35.5 fixed DROP COLUMN bugs that could corrupt a
# database (migration 0026 drops one).
OLDEST_SQLITE = (3, 35, 5)


def check_sqlite_version(found: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Refuse an SQLite older than ``OLDEST_SQLITE`` by name, before a migration fails on it
    with a bare syntax error."""
    if found < OLDEST_SQLITE:
        have = ".".join(map(str, found))
        need = ".".join(map(str, OLDEST_SQLITE))
        raise RuntimeError(
            f"SQLite {have} is too old: Easel needs {need} or later (Python's sqlite3 module "
            "uses the system's SQLite library; upgrade it, or use the Docker image)"
        )


# Rows of each index an ANALYZE reads (SQLite advises 100 to 1,000): it then costs the same
# at any size (see ``refresh_planner_statistics``).
ANALYSIS_LIMIT = 1000


async def connect(path: Path, *, busy_timeout_s: float = 5.0) -> aiosqlite.Connection:
    """Open (creating if needed) the database at ``path``, migrated to the latest schema.
    ``busy_timeout_s``: how long a write waits for another connection's lock before it fails
    (``database is locked``), between tries (``_without_busy_wait``)."""
    check_sqlite_version()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    _busy_timeouts_ms[conn] = round(busy_timeout_s * 1000)
    _database_folders[conn] = path.parent.resolve()
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute(f"PRAGMA busy_timeout={_busy_timeouts_ms[conn]}")
        await conn.execute("PRAGMA synchronous=NORMAL")
        # A deleted row's bytes are overwritten, not left in free space (/forget-me, retention);
        # Debian's SQLite does so by default, other builds do not.
        await conn.execute("PRAGMA secure_delete=ON")
        await conn.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        await migrate(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


# What ``connect_read_only`` says when it reads the file as it stands (``immutable``).
READ_AS_FROZEN = (
    "read as a frozen file: reading it as it is being written needs write access to its "
    "folder (its -shm file), which this user lacks; a running Easel's latest changes may not show"
)


async def connect_read_only(
    path: Path, *, busy_timeout_s: float = 5.0
) -> tuple[aiosqlite.Connection, str | None]:
    """Open the existing database at ``path`` to read only: nothing is created, migrated or
    written (``easel doctor`` may look at a live volume with a newer Easel's image). A WAL
    database needs its -shm file even to be read, created in its folder: without write access
    there, it is read as a frozen file (``immutable``) instead, and the second value says so
    (``READ_AS_FROZEN``; None otherwise). ``busy_timeout_s``: how long a read waits while a
    running Easel holds the database (a checkpoint, a recovery)."""
    check_sqlite_version()
    try:
        return await _opened_to_read(path, "mode=ro", busy_timeout_s), None
    except sqlite3.OperationalError as error:
        # Only a -shm it cannot create: a busy database (a start's exclusive lock) is no
        # reason to read a possibly stale frozen file and blame the folder's permissions.
        if error.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            raise
        frozen = await _opened_to_read(path, "mode=ro&immutable=1", busy_timeout_s)
        return frozen, READ_AS_FROZEN


async def _opened_to_read(path: Path, query: str, busy_timeout_s: float) -> aiosqlite.Connection:
    """``path`` opened with the URI ``query``, its schema read once (where opening fails)."""
    conn = await aiosqlite.connect(f"file:{quote(str(path))}?{query}", uri=True)
    conn.row_factory = aiosqlite.Row
    try:
        await conn.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        await (await conn.execute("SELECT count(*) FROM sqlite_master")).fetchone()
    except BaseException:
        await conn.close()
        raise
    return conn


async def connect_without_room(path: Path) -> aiosqlite.Connection:
    """Open the existing database at ``path`` to read it on a full disk: SQLite keeps its WAL
    index in memory under an exclusive lock instead of in a shared-memory file, which needs
    room to be made; so no other connection can use the database until this one is closed."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    try:
        await conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # before the first read
    except BaseException:
        await conn.close()
        raise
    return conn


# The busy timeouts ``connect`` set, in milliseconds (``_without_busy_wait`` reads another
# connection's from SQLite once).
_busy_timeouts_ms: weakref.WeakKeyDictionary[aiosqlite.Connection, int] = (
    weakref.WeakKeyDictionary()
)

# One transaction at a time per connection: SQLite cannot nest them, and coroutines share it.
_transaction_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
# The task holding each connection's lock: a ``write`` of its own runs in its transaction.
_lock_holders: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Task[Any] | None] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def outside_transactions(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """Statements that must not join another coroutine's ``transaction`` (run after it), yet
    are no transaction of their own: ``transaction``'s lock without ``BEGIN``, so there is no
    ``COMMIT`` that another coroutine's half-read ``RETURNING`` statement could fail."""
    async with _transaction_locks.setdefault(conn, asyncio.Lock()):
        _lock_holders[conn] = asyncio.current_task()
        try:
            yield conn
        finally:
            del _lock_holders[conn]


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection.

    A single statement another coroutine runs meanwhile on the same connection joins the open
    transaction; callers keep transactions short and raise inside them only on real failures.
    Writes that return rows (``RETURNING``) are read in the same call
    (``execute_fetchall``): one left half-read across an await would fail this ``COMMIT``.
    """
    async with outside_transactions(conn):
        try:
            await _begin_immediate(conn)
            yield conn
            await _to_the_end(conn.execute("COMMIT"))
        except BaseException:
            # Open after the body failed or a COMMIT failed (every later BEGIN would fail);
            # not after a failed BEGIN, nor after a COMMIT done before a cancel arrived.
            if conn.in_transaction:
                await _to_the_end(conn.execute("ROLLBACK"))
            raise


async def write(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()
) -> aiosqlite.Cursor:
    """Run ``sql``, one statement that writes, called in a ``transaction`` or not: in the
    caller's own, as it stands (its write lock is held); else on its own, waiting for another
    connection's write lock from asyncio (``_without_busy_wait``), as a transaction's BEGIN
    does. A statement only ever run in a ``transaction`` block needs none of it."""
    return await _written(conn, lambda: conn.execute(sql, parameters))


async def write_returning(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()
) -> Iterable[sqlite3.Row]:
    """``write`` of a statement whose rows (``RETURNING``) are read in the same call."""
    return await _written(conn, lambda: conn.execute_fetchall(sql, parameters))


async def _written(conn: aiosqlite.Connection, statement: Callable[[], Awaitable[_Done]]) -> _Done:
    # Only the caller's own transaction: another coroutine's may end before the statement runs.
    if conn.in_transaction and _lock_holders.get(conn) is asyncio.current_task():
        return await statement()
    return await _without_busy_wait(conn, statement)


async def _begin_immediate(conn: aiosqlite.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another connection's write lock from asyncio."""
    await _without_busy_wait(conn, lambda: conn.execute("BEGIN IMMEDIATE"))


# Waits between tries of a statement that found another connection's write lock: the first
# short (a lock is often held briefly), doubling up to the longest; each drawn from its upper
# half, so that writers that failed together do not all try again together.
_FIRST_BUSY_WAIT_S = 0.02
_LONGEST_BUSY_WAIT_S = 0.2


async def _without_busy_wait(
    conn: aiosqlite.Connection, statement: Callable[[], Awaitable[_Done]]
) -> _Done:
    """``statement()`` (one statement: ``BEGIN IMMEDIATE``, or a write outside a transaction,
    which a refusal leaves undone), waiting up to the connection's busy timeout while another
    connection (an operator's sqlite3 shell, a backup) holds the write lock, as SQLite would,
    but from asyncio between tries: SQLite's own wait would hold the connection's one thread,
    and every other coroutine's statement queued behind it, reads too (a member's /quota
    past Discord's 3 s). After the timeout, SQLite's own error ("database is locked"). Only
    these wait so: the busy timeout stays for every other statement (a read meeting a
    recovery)."""
    timeout_ms = _busy_timeouts_ms.get(conn)
    if timeout_ms is None:  # a connection ``connect`` did not open
        async with conn.execute("PRAGMA busy_timeout") as cursor:
            row = await cursor.fetchone()
        timeout_ms = _busy_timeouts_ms[conn] = int(row[0]) if row else 0
    loop = asyncio.get_running_loop()
    # From the first refusal, as SQLite's own wait: a lone write queued first under the lock
    # may hold the connection's thread for its whole busy timeout before this ever runs.
    deadline: float | None = None
    wait_s = _FIRST_BUSY_WAIT_S
    while True:
        # Queued back to back (each as its task first runs, in the order made), so no other
        # coroutine's statement runs without the wait.
        without_waiting = asyncio.ensure_future(conn.execute("PRAGMA busy_timeout=0"))
        running = asyncio.ensure_future(statement())
        waiting_again = asyncio.ensure_future(conn.execute(f"PRAGMA busy_timeout={timeout_ms}"))
        try:
            await _to_the_end(without_waiting, running, waiting_again)
            return running.result()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            if deadline is None:
                deadline = loop.time() + timeout_ms / 1000
            left_s = deadline - loop.time()
            if left_s <= 0:
                raise
        await asyncio.sleep(min(left_s, random.uniform(wait_s / 2, wait_s)))
        wait_s = min(2 * wait_s, _LONGEST_BUSY_WAIT_S)


async def _to_the_end(*statements: Awaitable[object]) -> None:
    """Run ``statements`` (``execute`` calls not yet awaited, or their futures), queued back to
    back in this order, and wait for them even when the caller is cancelled meanwhile (a stop
    during start-up): aiosqlite runs a statement whose caller has gone, so BEGIN or COMMIT
    would otherwise land after the ``in_transaction`` check above. Raises the first one's
    failure."""
    # Each ``execute`` is queued as its task first runs, and these run in the order made.
    running = [asyncio.ensure_future(statement) for statement in statements]
    # Every cancel is held until the statements are done (a second one would leave them
    # queued again), and the first one wins over a statement's own failure.
    cancelled: asyncio.CancelledError | None = None
    while not all(statement.done() for statement in running):
        try:
            await asyncio.wait(running)
        except asyncio.CancelledError as cancel:
            cancelled = cancelled or cancel
    if cancelled is not None:
        for statement in running:
            statement.exception()  # read, so the loop logs no "never retrieved" failure of it
        raise cancelled
    for statement in running:
        statement.result()


async def refresh_planner_statistics(conn: aiosqlite.Connection) -> bool:
    """Let SQLite analyse the tables this connection queried whose statistics are missing or
    outgrown (``PRAGMA optimize``, at most ``ANALYSIS_LIMIT`` rows an index), as it advises at
    a connection's close and every few hours on a long-lived one: without them the planner
    guesses (plain /cancel walked a member's every job on ``jobs_user``). Never raises: a
    failure (a full disk) is logged and returns False, and the next refresh tries again."""
    try:
        async with outside_transactions(conn):  # its ANALYZE must not join a transaction
            await write(conn, "PRAGMA optimize")
    except sqlite3.Error as error:  # one line: a full disk's stop says why in its own
        log.warning("the database's planner statistics were not refreshed: %s", error)
        return False
    return True


async def close(conn: aiosqlite.Connection) -> None:
    """Close the connection ``connect`` opened, its planner statistics refreshed first."""
    _database_folders.pop(conn, None)
    try:
        await refresh_planner_statistics(conn)
    finally:  # a cancel, or an error not SQLite's, must not keep it open
        await conn.close()


# Connections whose log a reader kept from being written back; Retention's sweep retries them.
_write_back_due: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()


def _truncate_log(path: str) -> bool:
    # A connection of its own and no busy wait: the bot's connection keeps serving statements
    # (a checkpoint there fails while any of its cursors is half-read, and waits busy_timeout
    # while another connection reads).
    try:
        side = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            busy, _log_frames, _copied_frames = side.execute(
                "PRAGMA wal_checkpoint(TRUNCATE)"
            ).fetchone()
        finally:
            side.close()
    except sqlite3.Error:
        return False
    return not busy


async def write_back_log(conn: aiosqlite.Connection) -> bool:
    """Copy the write-ahead log into the database file and empty it, so that rows deleted
    before then survive in neither. Never raises and never waits for a reader: while one
    (on this connection or another) still reads older pages it returns False, and
    ``write_back_due_log`` tries again later."""
    try:
        async with conn.execute("PRAGMA database_list") as cursor:
            path = next(str(row[2]) for row in await cursor.fetchall() if row[1] == "main")
    except (sqlite3.Error, ValueError, StopIteration):
        written = False
    else:  # an in-memory database ("") has no log on disk
        written = not path or await asyncio.to_thread(_truncate_log, path)
    if written:
        _write_back_due.discard(conn)
    else:
        _write_back_due.add(conn)
        log.warning("the database's write-ahead log is still being read; writing it back later")
    return written


async def write_back_due_log(conn: aiosqlite.Connection) -> bool:
    """Retry a write-back that a reader held up; True when none is (still) due."""
    return conn not in _write_back_due or await write_back_log(conn)

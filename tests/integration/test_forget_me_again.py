"""What a start erases again from ``forget-me.log`` (``History.forget_again``): what the database
holds of a member dated up to a request the record names (only a database put back from a
backup taken before it holds that), not what they made or saved since, and not a request the
database journals itself (its own run answers it). The real History on a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite
import pytest

from bot.forget_me_log import ForgetMeLog
from bot.history import Forgotten, History
from bot.jobs import accounting
from bot.policy.member_settings import MemberSettings
from db import erasures
from db.database import connect
from db.erasures import ReplyToken
from db.history import count_rows_of_user
from tests.conftest import ErrorLogs
from tests.support.backups import backed_up

MEMBER = 7
ASKED = 1_765_000_000.0  # when the member ran /forget-me, as the record says

# One row of each kind the erase takes but jobs (tests/e2e/test_forget_me_restore.py), dated
# ``:at``.
ROWS = {
    "settings": "INSERT INTO user_settings (user_id, updated_at) VALUES (:member, :at)",
    "preset": "INSERT INTO presets (scope, owner_id, name_key, name, values_json, updated_at)"
    " VALUES ('member', :member, 'mine', 'mine', '{}', :at)",
    "refusal": "INSERT INTO refusals (guild_id, user_id, reason, created_at)"
    " VALUES (5, :member, 'quota', :at)",
    "ledger row": "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images,"
    " gpu_seconds, at) VALUES ('0123456789abcdef', 'reserve', :member, 5, 1, 0, :at)",
}


async def rows_naming_the_member(conn: aiosqlite.Connection) -> int:
    ledger = await conn.execute_fetchall(
        "SELECT COUNT(*) FROM quota_ledger WHERE user_id = ? AND anonymise_at IS NULL", (MEMBER,)
    )
    return await count_rows_of_user(conn, MEMBER) + int(next(iter(ledger))[0])


@pytest.fixture
def history(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    record = ForgetMeLog(tmp_path)
    record.record(MEMBER, ASKED)
    return History(
        conn,
        tmp_path / "images",
        tmp_path / "inputs",
        MemberSettings(conn),
        forget_me_log=record,
    )


@pytest.mark.parametrize("kind", ROWS)
async def test_what_is_dated_up_to_the_request_is_erased_again_once(
    conn: aiosqlite.Connection, history: History, kind: str
) -> None:
    await conn.execute(ROWS[kind], {"member": MEMBER, "at": ASKED - 60})
    assert await rows_naming_the_member(conn) == 1

    assert await history.forget_again() == 1

    assert await rows_naming_the_member(conn) == 0
    assert await erasures.unfinished(conn) == []  # done, nobody to tell
    assert await history.forget_again() == 0  # the next start finds nothing


@pytest.mark.parametrize("kind", ROWS)
async def test_what_is_dated_after_the_request_stays(
    conn: aiosqlite.Connection, history: History, kind: str
) -> None:
    await conn.execute(ROWS[kind], {"member": MEMBER, "at": ASKED + 60})

    assert await history.forget_again() == 0

    assert await rows_naming_the_member(conn) == 1
    assert await erasures.unfinished(conn) == []


@pytest.mark.parametrize("journaled_at", [ASKED, ASKED + 60])
async def test_a_request_the_database_journals_then_or_since_is_left_to_its_own_run(
    conn: aiosqlite.Connection, history: History, journaled_at: float
) -> None:
    """A stop left it (or the member asked again since): the sweep of unfinished requests
    finishes it and tells the member, with the interaction's token it was asked with."""
    await conn.execute(ROWS["settings"], {"member": MEMBER, "at": ASKED - 60})
    await erasures.ask(conn, MEMBER, journaled_at, ReplyToken(1, "token"))

    assert await history.forget_again() == 0

    assert await erasures.unfinished(conn) == [
        erasures.Erasure(MEMBER, journaled_at, ReplyToken(1, "token"))
    ]
    assert await rows_naming_the_member(conn) == 1


async def test_an_older_request_a_backup_journaled_is_taken_over_silently(
    conn: aiosqlite.Connection, history: History
) -> None:
    """The backup was taken while an earlier request of the member's was being erased; that
    one was told since, and they asked again: the later request covers both, told by no one."""
    await conn.execute(ROWS["settings"], {"member": MEMBER, "at": ASKED - 60})
    await erasures.ask(conn, MEMBER, ASKED - 3600, ReplyToken(1, "token"))

    assert await history.forget_again() == 1

    assert await erasures.unfinished(conn) == []
    assert await rows_naming_the_member(conn) == 0


async def job_of_the_member(conn: aiosqlite.Connection, job_id: str, at: float) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, kind, status, user_id, guild_id, channel_id, request_json,"
        " created_at) VALUES (?, 'imagine', 'done', ?, 5, 6, '{}', ?)",
        (job_id, MEMBER, at),
    )
    await conn.commit()


def history_on(conn: aiosqlite.Connection, tmp_path: Path, clock: float | None = None) -> History:
    """A History over ``tmp_path``'s forget-me.log, as a start builds it; its clock stands
    at ``clock`` (None: the wall clock)."""
    now = time.time if clock is None else lambda: clock
    return History(
        conn,
        tmp_path / "images",
        tmp_path / "inputs",
        MemberSettings(conn, clock=now),
        clock=now,
        forget_me_log=ForgetMeLog(tmp_path),
    )


async def test_a_plain_restart_keeps_what_the_member_saved_after_a_clock_step_back(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    """The wall clock stepped back 3 s: the request is dated at the member's newest job (T),
    and the private results they turn on a second later are dated before it. The database
    knows it carried the request out, so no start erases again."""
    await job_of_the_member(conn, "a" * 16, ASKED)
    history = history_on(conn, tmp_path, clock=ASKED - 2)
    forgotten = await history.forget(MEMBER)
    await history.erasure_told(MEMBER, forgotten.asked_at)
    assert forgotten.asked_at == ASKED
    await MemberSettings(conn, clock=lambda: ASKED - 1).update(MEMBER, {"private_results": True})

    assert await history_on(conn, tmp_path).forget_again() == 0

    assert await rows_naming_the_member(conn) == 1  # the setting


async def test_a_plain_restart_keeps_a_job_made_at_the_request_instant_and_a_later_preset(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    """The queue's clock standing still: a job admitted right after the request is dated the
    same instant; a preset saved an hour later. Both stay."""
    history = history_on(conn, tmp_path, clock=ASKED)
    forgotten = await history.forget(MEMBER)
    await history.erasure_told(MEMBER, forgotten.asked_at)
    await job_of_the_member(conn, "b" * 16, ASKED)
    await conn.execute(ROWS["preset"], {"member": MEMBER, "at": ASKED + 3600})
    await conn.commit()

    assert await history.forget_again() == 0

    assert await rows_naming_the_member(conn) == 2


async def test_erased_again_settings_presets_and_refusals_go_only_if_dated_up_to_the_request(
    conn: aiosqlite.Connection, history: History
) -> None:
    """A database that does not know of the request (put back), holding a job from before it:
    the job goes; what is dated after the request stays, whatever set the erase off."""
    await job_of_the_member(conn, "c" * 16, ASKED - 60)
    for kind in ("settings", "preset", "refusal"):
        await conn.execute(ROWS[kind], {"member": MEMBER, "at": ASKED + 60})
    await conn.commit()

    assert await history.forget_again() == 1

    assert await rows_naming_the_member(conn) == 3
    assert await conn.execute_fetchall("SELECT id FROM jobs") == []


async def test_requests_found_carried_out_are_marked_so_and_a_start_costs_a_few_statements(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """1,000 requests recorded that this database holds nothing of (one that predates the
    record of erasures carried out): one set-based pass, not a query per member; marked
    carried out, so that the next start reads the record alone."""
    (tmp_path / "forget-me.log").write_bytes(
        b"".join(f"{10**17 + i} {ASKED + i}\n".encode() for i in range(1_000))
    )
    await job_of_the_member(conn, "d" * 16, ASKED - 60)  # another member's, not in the log
    history = history_on(conn, tmp_path)
    statements: list[str] = []
    await conn.set_trace_callback(statements.append)
    try:
        assert await history.forget_again() == 0
        first = [s for s in statements if "FROM jobs" in s]
        statements.clear()
        assert await history.forget_again() == 0
        second = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "CREATE"))]
    finally:
        await conn.set_trace_callback(None)
    assert len(first) == 1  # the member data searched once for all 1,000
    assert second == []  # every request known carried out: nothing asked of the tables
    done = await conn.execute_fetchall("SELECT COUNT(*) FROM erasures_done")
    assert next(iter(done))[0] == 1_000


@pytest.mark.parametrize(
    "line",
    [b"0 1765000000.0\n", b"99999999999999999999999 1765000000.0\n"],
    ids=["member 0", "past SQLite's integers"],
)
async def test_a_line_naming_no_member_neither_hangs_nor_stops_a_start(
    conn: aiosqlite.Connection, tmp_path: Path, line: bytes, error_logs: ErrorLogs
) -> None:
    """Member 0 owns every anonymised ledger row: erased again, they would be rewritten
    1,000 at a time without end. A 23-digit id does not fit SQLite's integers."""
    await conn.executemany(
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " VALUES (?, 'reserve', 0, 5, 1, 0, ?)",
        [(f"{i:016x}", ASKED - 10**7 - i) for i in range(1_500)],
    )
    await conn.commit()
    (tmp_path / "forget-me.log").write_bytes(line)

    assert await asyncio.wait_for(history_on(conn, tmp_path).forget_again(), 60) == 0


async def test_a_record_that_cannot_be_read_is_logged_by_name_and_the_start_goes_on(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    (tmp_path / "forget-me.log").mkdir()  # as EACCES or EIO would refuse the read
    error_logs.expect(r"forget-me\.log cannot be read .*make it a file Easel can read")

    assert await history_on(conn, tmp_path).forget_again() == 0

    [error] = error_logs.records
    assert str(tmp_path / "forget-me.log") in error.getMessage()


async def test_a_record_that_cannot_be_written_fails_no_erase(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    """A read-only or full disk: the member's data is erased and they are told; the error
    names the file (only a restore could undo this request now)."""
    await job_of_the_member(conn, "e" * 16, ASKED - 60)
    (tmp_path / "forget-me.log").mkdir()  # as a read-only or full volume refuses the append
    error_logs.expect(r"could not be added to .*forget-me\.log")
    told: list[float] = []

    async def tell(forgotten: Forgotten) -> None:
        told.append(forgotten.asked_at)

    await history_on(conn, tmp_path, clock=ASKED).forget(MEMBER, tell=tell)

    assert told == [ASKED]
    assert await rows_naming_the_member(conn) == 0
    assert await erasures.unfinished(conn) == []
    [error] = error_logs.records
    assert str(tmp_path / "forget-me.log") in error.getMessage()


async def test_a_request_is_recorded_before_its_erase_and_a_restore_after_that_loses_nothing(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stops once the erase is written, before anything else (a crash), and a backup
    taken before the request is put back: the record names the request already, so the next
    start erases the member again."""
    await job_of_the_member(conn, "e" * 16, ASKED - 60)
    backup = backed_up(tmp_path / "easel.sqlite3", tmp_path / "backup" / "easel.sqlite3")
    erase_member = accounting.erase_member

    async def erased_then_stopped(*args: Any, **kwargs: Any) -> NoReturn:
        await erase_member(*args, **kwargs)
        raise OSError("the power went")

    monkeypatch.setattr(accounting, "erase_member", erased_then_stopped)
    with pytest.raises(OSError, match="the power went"):
        await history_on(conn, tmp_path, clock=ASKED).forget(MEMBER)
    assert await rows_naming_the_member(conn) == 0
    monkeypatch.undo()
    restored = await connect(backup)
    try:
        assert await rows_naming_the_member(restored) == 1
        assert await history_on(restored, tmp_path, clock=ASKED + 60).forget_again() == 1
        assert await rows_naming_the_member(restored) == 0
    finally:
        await restored.close()


async def test_a_request_is_recorded_before_its_erase_and_its_member_is_told(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erase that fails has its request recorded already (its journal row stays: the
    retry records it again); one that is done is on disk when the member hears of it."""
    history = history_on(conn, tmp_path, clock=ASKED)
    erase_member = accounting.erase_member

    async def failing(*args: object, **kwargs: object) -> NoReturn:
        raise OSError("the disk failed")

    monkeypatch.setattr(accounting, "erase_member", failing)
    with pytest.raises(OSError):
        await history.forget(MEMBER)
    assert ForgetMeLog(tmp_path).requests() == {MEMBER: ASKED}

    monkeypatch.setattr(accounting, "erase_member", erase_member)
    recorded: list[dict[int, float]] = []

    async def tell(forgotten: Forgotten) -> None:
        recorded.append(ForgetMeLog(tmp_path).requests())

    [erasure] = await erasures.unfinished(conn)
    await history.resume(erasure, tell)
    assert recorded == [{MEMBER: ASKED}]


async def test_a_failing_erase_retried_by_each_sweep_is_recorded_once_per_run(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep retries an erase that keeps failing (every 120 s at most): the record gains
    one line, not one per retry; a restart records it again (its run may have stopped
    before it did)."""
    history = history_on(conn, tmp_path, clock=ASKED)

    async def failing(*args: object, **kwargs: object) -> NoReturn:
        raise OSError("the disk failed")

    monkeypatch.setattr(accounting, "erase_member", failing)
    with pytest.raises(OSError):
        await history.forget(MEMBER)
    for _ in range(50):  # under two hours of sweeps
        [erasure] = await erasures.unfinished(conn)
        with pytest.raises(OSError):
            await history.resume(erasure)
    record = tmp_path / "forget-me.log"
    assert record.read_text().splitlines() == [f"{MEMBER} {ASKED!r}"]

    [erasure] = await erasures.unfinished(conn)
    with pytest.raises(OSError):
        await history_on(conn, tmp_path, clock=ASKED).resume(erasure)
    assert len(record.read_text().splitlines()) == 2


async def test_a_re_erase_that_failed_keeps_its_date_bound_when_the_sweep_finishes_it(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """The start's erase failed and left the request journaled: the sweep's retry takes the
    job made before the request, and leaves the settings the member saved after it."""
    await job_of_the_member(conn, "f" * 16, ASKED - 60)
    await conn.execute(ROWS["settings"], {"member": MEMBER, "at": ASKED + 60})
    await conn.commit()
    ForgetMeLog(tmp_path).record(MEMBER, ASKED)
    history = history_on(conn, tmp_path, clock=ASKED + 120)

    async def failing(*args: object, **kwargs: object) -> NoReturn:
        raise OSError("the disk failed")

    monkeypatch.setattr(accounting, "erase_member", failing)
    error_logs.expect(r"erasing again what a database put back held failed")
    assert await history.forget_again() == 0
    monkeypatch.undo()
    [erasure] = await history.unfinished_erasures()
    told: list[int] = []

    async def tell(forgotten: Forgotten) -> None:
        told.append(forgotten.jobs)

    await history.resume(erasure, tell)

    assert told == [1]
    assert await erasures.unfinished(conn) == []
    assert await count_rows_of_user(conn, MEMBER) == 1  # the settings saved after it
    saved = await conn.execute_fetchall(
        "SELECT updated_at FROM user_settings WHERE user_id = ?", (MEMBER,)
    )
    assert [row[0] for row in saved] == [ASKED + 60]


async def test_the_members_own_request_over_a_re_erase_takes_everything_again(
    conn: aiosqlite.Connection,
) -> None:
    """A re-erase left journaled, then the member runs /forget-me: theirs is unbounded."""
    await conn.execute(ROWS["settings"], {"member": MEMBER, "at": ASKED - 60})
    assert [e.again for e in await erasures.ask_again(conn, {MEMBER: ASKED})] == [True]
    assert [e.again for e in await erasures.unfinished(conn)] == [True]
    await erasures.ask(conn, MEMBER, ASKED + 60, ReplyToken(1, "token"))
    assert [e.again for e in await erasures.unfinished(conn)] == [False]

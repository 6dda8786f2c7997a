"""/forget-me's record outside the database (``EASEL_DATA_DIR/forget-me.log``): what it reads
back, and a last line a crash cut short, which is no request and never joins the next one."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from bot.forget_me_log import FILE_NAME, ForgetMeLog

MEMBER, OTHER = 123456789012345678, 876543210987654321


def test_each_members_latest_request_reads_back_exactly(tmp_path: Path) -> None:
    record = ForgetMeLog(tmp_path)
    assert record.requests() == {}  # no file yet: no request
    first, later = time.time(), time.time() + 0.123456789
    record.record(MEMBER, later)
    record.record(OTHER, first)
    record.record(MEMBER, first)  # an older time recorded after a later one
    assert ForgetMeLog(tmp_path).requests() == {MEMBER: later, OTHER: first}
    # The member's id and the time alone.
    assert (tmp_path / FILE_NAME).read_text() == (
        f"{MEMBER} {later!r}\n{OTHER} {first!r}\n{MEMBER} {first!r}\n"
    )


@pytest.mark.parametrize("whole_lines_before", [0, 2])
def test_a_line_a_crash_cut_short_is_skipped_then_cut_off_before_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, whole_lines_before: int
) -> None:
    record = ForgetMeLog(tmp_path)
    for offset in range(whole_lines_before):
        record.record(OTHER + offset, 1_700_000_000.5 + offset)
    whole = (tmp_path / FILE_NAME).read_bytes() if whole_lines_before else b""
    # A crash while appending MEMBER's request: its id, a space and part of its time reached
    # the disk. Read as a line, it would name the member with a time long before they asked.
    with (tmp_path / FILE_NAME).open("ab") as file:
        file.write(f"{MEMBER} 17".encode())
    with caplog.at_level(logging.WARNING, logger="bot.forget_me_log"):
        asked = record.requests()
    assert MEMBER not in asked and len(asked) == whole_lines_before
    assert "its last line was cut short" in caplog.text

    record.record(MEMBER, 1_765_000_000.25)
    assert (tmp_path / FILE_NAME).read_bytes() == whole + f"{MEMBER} 1765000000.25\n".encode()
    assert record.requests()[MEMBER] == 1_765_000_000.25


def test_lines_not_of_its_form_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Member 0 (the erased ledger rows' owner: erasing it again would rewrite them without
    end) and ids past SQLite's integers (2**63 and up) are no member: skipped, with one
    warning naming the file and the lines by number."""
    (tmp_path / FILE_NAME).write_bytes(
        b"\x00\x00\x00\n"  # a block a crash left zeroed
        b"12 nan\n-5 1765000000.0\n12 1765000000.0 extra\nnot-a-member 1765000000.0\n\n"
        + f"{MEMBER} 1765000000.5\n".encode()
        + b"0 1765000000.0\n"
        + f"{2**63} 1765000000.0\n".encode()
        + b"99999999999999999999999 1765000000.0\n"
        + f"{2**63 - 1} 1765000000.0\n".encode()
    )
    with caplog.at_level(logging.WARNING, logger="bot.forget_me_log"):
        assert ForgetMeLog(tmp_path).requests() == {
            MEMBER: 1_765_000_000.5,
            2**63 - 1: 1_765_000_000.0,
        }
    [warning] = caplog.records
    assert warning.getMessage() == (
        f"{tmp_path / FILE_NAME}: line(s) 1, 2, 3, 4, 5, 6, 8, 9, 10 not of the form"
        " '<member id 1..2^63-1> <time>': skipped"
    )

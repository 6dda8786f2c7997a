"""Audit rows of moderation stay readable: a purge's withdrawal names its counts first and at
most ``IDS_LISTED`` ids, and /easel-admin audit cuts each line, not the message, so one long
row never hides the others."""

from __future__ import annotations

from bot.history import WITHDRAWAL_AUDITED_AS, listed_ids
from cogs.admin import audit_text
from cogs.common import MESSAGE_LIMIT
from db.guild_settings import AuditEntry

IDS = [f"{n:016x}" for n in range(1, 2_001)]


def test_ids_are_listed_up_to_ten_then_counted() -> None:
    assert listed_ids(IDS[:3]) == ", ".join(IDS[:3])
    assert listed_ids(IDS[:10]) == ", ".join(IDS[:10])
    assert listed_ids(IDS) == f"{', '.join(IDS[:10])} and 1990 more"


def test_a_long_row_hides_no_other_row() -> None:
    """An old row (written before ids were capped) of 2,000 ids is the newest: every other
    row, and the start of the long one, are still shown within one message."""
    purge = AuditEntry(99, WITHDRAWAL_AUDITED_AS, None, ", ".join(IDS), 1_800_000_100.0)
    others = [AuditEntry(1, "banned_word", None, f"word{n}", 1_800_000_000.0) for n in range(14)]
    text = audit_text([purge, *others])
    assert len(text) <= MESSAGE_LIMIT
    lines = text.splitlines()
    assert len(lines) == 16
    assert lines[1].startswith(f"<t:1800000100:f> <@99> {WITHDRAWAL_AUDITED_AS}: — → {IDS[0]}")
    assert lines[1].endswith("…")
    assert [line.endswith(f"word{n}") for n, line in enumerate(lines[2:])] == [True] * 14

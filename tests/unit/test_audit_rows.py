"""Audit rows of moderation stay readable: a purge's withdrawal names its counts first and at
most ``IDS_LISTED`` ids, and /easel-admin audit cuts long rows, not the message, so one long
row never hides the others: only when they do not all fit, and inside a row's values, so a
banned word's spoiler always closes."""

from __future__ import annotations

from bot.history import WITHDRAWAL_AUDITED_AS, listed_ids
from bot.policy.guild import GuildList, GuildSettings
from cogs.admin import audit_text, describe_guild
from cogs.common import MESSAGE_LIMIT
from db.guild_settings import AuditEntry

IDS = [f"{n:016x}" for n in range(1, 2_001)]
ADMIN = 123456789012345678


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
    assert len(text) == MESSAGE_LIMIT  # the short rows' unused room goes to the long one
    expected = [f"banned words: added ||word{n}||" for n in range(14)]
    assert [line.split("> ", 2)[2] for line in lines[2:]] == expected


def test_rows_read_in_the_words_of_easel_admin_show() -> None:
    """The journal's setting keys, ids and JSON are shown as /easel-admin show and
    /easel-admin quota word them: mentions for channels, roles and members, spoilered
    banned words, limits in words."""
    rows = [
        AuditEntry(1, "allowed_channel", None, "50", 1.0),
        AuditEntry(1, "priority_role", "60", None, 1.0),
        AuditEntry(1, "allowed_lora", None, "detail", 1.0),
        AuditEntry(1, "nsfw_policy", "allow", "age_restricted_only", 1.0),
        AuditEntry(1, "default_model", None, "tiny", 1.0),
        AuditEntry(1, "quota:guild:5", None, '{"images_per_day": 50}', 1.0),
        AuditEntry(
            1, "quota:user:7", None, '{"images_per_day": 1, "gpu_seconds_per_day": 2.5}', 1.0
        ),
        AuditEntry(1, "quota:role:60", None, "{}", 1.0),
    ]
    assert [line.split("> ", 2)[2] for line in audit_text(rows).splitlines()[1:]] == [
        "allowed channels: added <#50>",
        "priority roles: removed <@&60>",
        "allowed LoRAs: added `detail`",
        "NSFW policy: allow → only in age-restricted channels",
        "default model: Easel default → tiny",
        "quota for everyone: images per day: 50",
        "quota for <@7>: images per day: 1, gpu seconds per day: 2.5",
        "quota for <@&60>: unlimited",
    ]


def test_no_row_is_cut_while_every_row_fits() -> None:
    limits = (
        '{"images_per_day": 20, "images_per_week": 100, "images_per_month": 300, '
        '"gpu_seconds_per_day": 600}'
    )
    rows = [AuditEntry(ADMIN, "quota:user:234567890123456789", None, limits, 1.8e9)]
    rows += [AuditEntry(ADMIN, "nsfw_policy", "allow", "spoiler", 1.8e9)] * 14
    text = audit_text(rows)
    assert "…" not in text
    assert text.splitlines()[1].endswith(
        "quota for <@234567890123456789>: images per day: 20, images per week: 100, "
        "images per month: 300, gpu seconds per day: 600"
    )


def test_a_cut_banned_word_stays_behind_its_spoiler() -> None:
    """Fifteen of the longest banned words do not fit one message: each is cut inside its
    spoiler, which still closes, and hides no other row."""
    words = [f"{n:02d}" + "x" * 40 + "secret" + "y" * 52 for n in range(15)]
    text = audit_text([AuditEntry(ADMIN, "banned_word", None, word, 1.8e9) for word in words])
    assert len(text) <= MESSAGE_LIMIT
    for n, line in enumerate(text.splitlines()[1:]):
        assert line.startswith(f"<t:1800000000:f> <@{ADMIN}> banned words: added ||{n:02d}x")
        assert line.endswith("…||") and line.count("||") == 2


def test_markdown_in_a_banned_word_cannot_open_its_spoiler() -> None:
    """A word holding ``||`` (or a backtick or emphasis that could pair with one outside)
    is escaped behind its spoiler, in the audit as in /easel-admin show."""
    word = "a||b`c*d_e~f\\"
    shown = "||a\\|\\|b\\`c\\*d\\_e\\~f\\\\||"
    [_, row] = audit_text([AuditEntry(ADMIN, "banned_word", None, word, 1.8e9)]).splitlines()
    assert row.endswith(f"banned words: added {shown}")
    settings = GuildSettings(1, None, "allow", {GuildList.BANNED_WORD: frozenset({word})})
    assert f"banned words: {shown}" in describe_guild(settings)

"""/info lays out a PNG's parameters, /history a member's prompts: whoever wrote them is not
Easel, so nothing in them reads as Easel's own markdown, links or pills."""

from __future__ import annotations

from bot.history import PAGE_SIZE, HistoryLine, HistoryPage
from bot.policy.delivery import model_left_out_now
from cogs.common import MESSAGE_LIMIT
from cogs.history import render_page
from cogs.info import describe_infotext
from cogs.lists import MAX_SEARCH_CHARS


def test_a_pngs_parameters_are_shown_as_typed() -> None:
    infotext = (
        "a [cat](https://evil.example/a) <@&1>\n"
        "Negative prompt: **ugly**\n"
        'Steps: 20, Model: "[free nitro](https://nitro.example/claim)", Size: 512x512'
    )
    shown = describe_infotext("picture.png", infotext)
    assert "**Prompt:** a \\[cat](<https://evil.example/a>) \\<@&1>" in shown
    assert "**Negative:** \\*\\*ugly\\*\\*" in shown
    assert "**Model:** \\[free nitro](<https://nitro.example/claim>)" in shown
    assert "**Size:** 512x512" in shown


def test_history_shows_a_prompt_as_typed_and_cut_to_its_preview() -> None:
    line = HistoryLine("0123456789abcdef", "done", "a [cat](https://evil.example) <@&1>", 0.0, 1)
    shown = render_page(HistoryPage([line], 0, 1, 1), None)
    assert "a \\[cat](<https://evil.example>) \\<@&1>" in shown
    long = HistoryLine("0123456789abcdef", "done", "_" * 500, 0.0, 1)
    preview = render_page(HistoryPage([long], 0, 1, 1), None).splitlines()[1]
    assert preview.endswith("\\_…") and len(preview) < 200


def test_a_history_page_of_long_reasons_withheld_stays_within_discords_limit() -> None:
    """Each reason cut short: five of the longest, with the longest search spelled out (each
    character ten by its repr) and the longest prompt previews, still fit one message."""
    why = model_left_out_now("m" * 200)
    lines = [
        HistoryLine(f"{n:016x}", "done", "_" * 500, 1.7e9, 0, withheld=True, withheld_why=why)
        for n in range(PAGE_SIZE)
    ]
    shown = render_page(HistoryPage(lines, 0, 1000, 5000), "\U000e0001" * MAX_SEARCH_CHARS)
    assert len(shown) <= MESSAGE_LIMIT, len(shown)
    state = shown.splitlines()[1].split("not posted: ")[1].split("; not counted")[0]
    assert state.startswith("its model `mmm") and state.endswith("…") and len(state) <= 120

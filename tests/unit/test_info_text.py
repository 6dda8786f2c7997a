"""/info lays out a PNG's parameters, /history a member's prompts: whoever wrote them is not
Easel, so nothing in them reads as Easel's own markdown, links or pills."""

from __future__ import annotations

from bot.history import HistoryLine, HistoryPage
from cogs.history import render_page
from cogs.info import describe_infotext


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

"""The memory of recent clicks: a repeat while the first is answered, or within the window
after it was, is caught; one after the window, or after a refused click, is not."""

from __future__ import annotations

from cogs.results.repeated_clicks import RecentClicks

U1 = (1, "easel:pick:0123456789abcdef:0", 7)


def test_a_repeat_while_answering_or_within_the_window_after_is_caught() -> None:
    now = [100.0]
    clicks = RecentClicks(3.0, clock=lambda: now[0])
    assert clicks.begin(U1)
    assert clicks.begin((1, "easel:pick:0123456789abcdef:0", 8))  # another member
    assert clicks.begin((1, "easel:pick:0123456789abcdef:1", 7))  # another button
    now[0] = 110.0
    assert not clicks.begin(U1)  # still being answered, however long it takes
    clicks.end(U1, answered=True)
    now[0] = 112.9
    assert not clicks.begin(U1)
    now[0] = 113.0  # the window runs from the answer
    assert clicks.begin(U1)


def test_a_refused_click_is_forgotten_at_once() -> None:
    clicks = RecentClicks(3.0, clock=lambda: 100.0)
    assert clicks.begin(U1)
    clicks.end(U1, answered=False)
    assert clicks.begin(U1)

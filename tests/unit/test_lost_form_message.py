"""The answer to a form no live form took (cogs.forms): what the member typed comes back in one
Discord message, each value escaped and cut to its fair share, none left out."""

from __future__ import annotations

from cogs.common import MESSAGE_LIMIT, quoted
from cogs.forms import LOST_FORM, lost_form_message, typed_values


def test_long_values_share_one_message_and_a_short_one_stays_whole() -> None:
    prompt, negative, seed = "*a* " * 1000, "blurry " * 600, "1234"
    message = lost_form_message([prompt, negative, "", seed])
    assert len(message) <= MESSAGE_LIMIT
    assert message.startswith(LOST_FORM)
    assert message.endswith("\n\n1234")  # the empty field is left out, the seed whole
    assert quoted(prompt, 300)[:-1] in message and quoted(negative, 300)[:-1] in message


def test_nothing_typed_is_the_sentence_alone() -> None:
    assert lost_form_message(["", "  "]) == LOST_FORM


def test_values_are_read_from_rows_and_labels_in_order() -> None:
    text_input = {"type": 4, "custom_id": "a", "value": "first"}
    components = [
        {"type": 1, "components": [text_input]},
        {"type": 18, "component": {"type": 4, "custom_id": "b", "value": "second"}},
    ]
    assert list(typed_values(components)) == ["first", "second"]

"""The note of a saved value the default model refuses names the default that applies: this
server's, or Easel's in direct messages (where it said "this server's default")."""

from __future__ import annotations

from bot.presets import refused_by_the_default_note
from bot.user_errors import UserError

REFUSAL = UserError("clip skip does not work with Flux dev models here")


def test_in_a_server_the_note_names_this_servers_default() -> None:
    assert refused_by_the_default_note(REFUSAL, 1) == (
        "Note: naming no model, it renders here with this server's default, which refuses it: "
        "Clip skip does not work with Flux dev models here. Add a `--model` that takes it when "
        "you use it here."
    )


def test_in_direct_messages_the_note_names_easels_default() -> None:
    note = refused_by_the_default_note(REFUSAL, None)
    assert "server" not in note, note
    assert note.startswith(
        "Note: naming no model, it renders in direct messages with Easel's default, which"
    ), note
    assert note.endswith("when you use it in direct messages."), note

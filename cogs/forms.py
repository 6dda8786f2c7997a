"""Easel's forms (Discord modals: Remix, Vary (Region) in words, Use as control): their ids,
their failures answered as a command's, and a submit that no form in this process takes
(opened before Easel restarted, or left open past ``FORM_TIMEOUT_S``) answered privately, with
what the member typed given back, where Discord would show only its "Something went wrong"."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import discord

from cogs.common import MESSAGE_LIMIT, fair_shares, quoted, tell
from cogs.errors import report_error
from cogs.visibility import DISCORD_FAILED

log = logging.getLogger(__name__)

# A form lives in this process's memory until submitted; one left open is dropped after this
# long (as long as a Vary (Region) link lives).
FORM_TIMEOUT_S = 15 * 60

# What ``form_id`` makes: only these submits are Easel's to answer when no form took them.
_FORM_ID = re.compile(r"easel:[a-z]+(?:-[a-z]+)*-modal:[0-9a-f]{16}")
# Set on an interaction by the live form or view that took it (``mark_taken``): a form's
# submit (``ReportingModal.interaction_check``, or its ``on_error`` when discord.py could not
# read the submit into it), or a /forget-me question's press.
_TAKEN = "easel.taken"

LOST_FORM = (
    "Easel no longer has this form: it was opened before Easel restarted, or left open too "
    "long. Open it again from its button or menu."
)
_TYPED = " What you typed, to paste into the new form:"


def form_id(kind: str) -> str:
    """A fresh custom_id for a ``kind`` form (``remix``): two members filling in forms of the
    same picture never collide."""
    return f"easel:{kind}-modal:{secrets.token_hex(8)}"


class ReportingModal(discord.ui.Modal):
    """An Easel form: its failure is answered as a command's is (``report_error``), where
    discord.py would only log it (a member's mistake in one sentence, an internal failure with
    a reference id); the submits it takes are marked so, which ``answer_lost_form`` leaves
    alone. Every form Easel opens is one."""

    def __init__(self, kind: str, *, title: str) -> None:
        super().__init__(title=title, timeout=FORM_TIMEOUT_S, custom_id=form_id(kind))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        mark_taken(interaction)
        return True

    # discord.py's Modal.on_error drops the View's ``item`` argument, as here; mypy holds the
    # override to BaseView's signature as well.
    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], error: Exception, /
    ) -> None:
        # A submit discord.py failed to read into the form (before ``interaction_check``) is
        # this form's too: answered here, once.
        mark_taken(interaction)
        await report_error(interaction, error, f"modal {type(self).__name__}")


def mark_taken(interaction: discord.Interaction[Any]) -> None:
    """Mark ``interaction`` as taken by a live form or view (``untaken_custom_id``)."""
    interaction.extras[_TAKEN] = True


def untaken_custom_id(
    interaction: discord.Interaction[Any], kind: discord.InteractionType
) -> str | None:
    """The custom_id of ``interaction``, one of ``kind``, where no live form or view took it
    (``mark_taken``); None otherwise."""
    if interaction.type is not kind or interaction.extras.get(_TAKEN):
        return None
    data: Mapping[str, Any] = interaction.data or {}
    custom_id = data.get("custom_id")
    return custom_id if isinstance(custom_id, str) else None


async def answer_lost_form(interaction: discord.Interaction[Any]) -> None:
    """The ``on_interaction`` listener: an Easel form's submit that no live form took is
    answered privately (``lost_form_message``) instead of never.

    No race with a live form: discord.py hands a submit to its form (a task) before it
    dispatches ``on_interaction`` (a task made after it), and asyncio starts tasks in the order
    they were made; a form marks the submit in its task's first step, before anything it
    awaits can let this listener run."""
    custom_id = untaken_custom_id(interaction, discord.InteractionType.modal_submit)
    if custom_id is None or not _FORM_ID.fullmatch(custom_id):
        return
    data: Mapping[str, Any] = interaction.data or {}
    log.info("form %s submitted by user %s is no longer open: told", custom_id, interaction.user.id)
    try:
        await tell(interaction, lost_form_message(list(typed_values(data.get("components", ())))))
    except DISCORD_FAILED as failure:
        log.warning("could not tell user %s their form is gone: %s", interaction.user.id, failure)


def typed_values(components: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    """A submit's text inputs' values, in the form's order (rows, or labels, hold them)."""
    for component in components:
        is_text_input = component.get("type") == discord.ComponentType.text_input.value
        if is_text_input and isinstance(value := component.get("value"), str):
            yield value
        yield from typed_values(component.get("components", ()))
        if isinstance(inner := component.get("component"), Mapping):
            yield from typed_values([inner])


def lost_form_message(values: Sequence[str]) -> str:
    """``LOST_FORM``, then each value the member typed (none left empty), its markdown escaped
    and each cut to its fair share of one message (``fair_shares``: a long prompt never hides
    the seed), so that nothing they typed is lost to the form."""
    typed = [value for value in values if value.strip()]
    if not typed:
        return LOST_FORM
    head = LOST_FORM + _TYPED
    separator = "\n\n"
    room = MESSAGE_LIMIT - len(head) - len(separator) * len(typed)
    shares = fair_shares([len(quoted(value, MESSAGE_LIMIT)) for value in typed], room)
    return head + "".join(
        separator + quoted(value, share) for value, share in zip(typed, shares, strict=True)
    )

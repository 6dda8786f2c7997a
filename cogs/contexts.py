"""Where the commands may be used: servers (those in EASEL_ALLOWED_SERVERS when the operator
lists some), direct messages only when the operator allows them (EASEL_ALLOW_DMS), group DMs
never.

Discord hides a command from the places its registered ``contexts`` leave out; the tree checks
again on arrival, because a stale registration (global commands take up to an hour to update)
can still deliver a command from a DM after the operator turned DMs off. Every interaction is
stamped on receipt, and one Discord delivers twice is dropped. One from a server the operator
did not list (a command, a click, a form, an autocomplete) is answered that Easel is not enabled
there, and goes no further.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.jobs.retention import DISCORD_TOKEN_LIFETIME_S
from bot.memo import ExpiringKeys
from cogs.visibility import DISCORD_FAILED

# /forget-me's command name (``cogs.history``), which some paths must know before its cog runs,
# and the start of its confirmation button's custom_id (then the asking interaction's id).
FORGET_ME = "forget-me"
FORGET_ME_CONFIRM = "easel-forget-me:"

if TYPE_CHECKING:
    from discord.state import ConnectionState

log = logging.getLogger(__name__)

# Where an interaction's receipt is kept: an application command's in its ``extras``, and
# every interaction's in its payload's ``data`` (``_stamp_receipts``).
_RECEIVED_AT = "easel_received_at"
# Interactions received lately, by id, kept as long as Discord lets one be answered (its
# token's 15 minutes): at most this many (more than 100 a second for all that time), 17.5 MiB
# when full (tracemalloc).
INTERACTIONS_REMEMBERED = 100_000
# The answer in a server that EASEL_ALLOWED_SERVERS leaves out.
NOT_ENABLED_HERE = (
    "Easel is not enabled in this server by its operator: it works only in the servers they chose."
)


def received_at(interaction: discord.Interaction[Any]) -> float | None:
    """When this process received the interaction, on the monotonic clock: an application
    command's as ``AcknowledgeFirst.received`` read it, another's (a button, a form) as its
    gateway event was parsed (``_stamp_receipts``); None: neither (not from the gateway)."""
    value = interaction.extras.get(_RECEIVED_AT)
    if value is None and isinstance(interaction.data, dict):
        value = interaction.data.get(_RECEIVED_AT)
    return value if isinstance(value, float) else None


def _stamp_receipts(
    state: ConnectionState[Any],
    serves: Callable[[int], bool],
    refusals: set[asyncio.Task[None]],
) -> None:
    """Each interaction's payload stamped with when its gateway event is parsed (the monotonic
    clock), before discord.py hands it to a command, a view or a form: in the gateway's order,
    so a button's or form's work is placed against a stop heard after it
    (``StoppedMembers.holds``) as a command's is, whatever the host's wall clock says.
    discord.py keeps the payload's ``data`` as ``Interaction.data``: the one part of the event
    that reaches every handler.

    An interaction Discord delivers again (a replayed event) is dropped: handled twice, it
    would be answered twice, its second defer refused as already acknowledged (a warning);
    and where the first defer's reply was lost, ``defer_thinking`` would take that refusal for
    its own lost answer, journaling and charging the job twice.

    One from a server that ``serves`` refuses is answered so (``_refuse_unserved``, the answer
    kept in ``refusals`` until sent) and handed to nothing else: here every kind of interaction
    passes, before discord.py's dispatch; only /forget-me is served everywhere
    (``_served_everywhere``)."""
    parsers = state.parsers  # the dict the gateway reads each event's parser from
    parse = parsers["INTERACTION_CREATE"]
    seen: ExpiringKeys[str] = ExpiringKeys(DISCORD_TOKEN_LIFETIME_S, INTERACTIONS_REMEMBERED)

    def parse_stamped(payload: dict[str, Any]) -> None:
        now = time.monotonic()
        if (interaction_id := payload.get("id")) is not None:
            if seen.holds(interaction_id, now):
                log.info("interaction %s was delivered again: dropped", interaction_id)
                return
            seen.add(interaction_id, now)
        if (
            (guild_id := payload.get("guild_id")) is not None
            and not serves(int(guild_id))
            and not _served_everywhere(payload)
        ):
            answer = _refuse_unserved(state, payload)
            refusals.add(answer)
            answer.add_done_callback(refusals.discard)
            return
        if isinstance(data := payload.get("data"), dict):
            data[_RECEIVED_AT] = now
        parse(payload)

    parsers["INTERACTION_CREATE"] = parse_stamped


# Commands answered in every server, listed or not: a member whose only server in common with
# Easel was left off EASEL_ALLOWED_SERVERS (DMs off) could otherwise never erase their data.
# /forget-me (``cogs.history``) passes, and the press of its confirmation's button.
_COMMANDS_SERVED_EVERYWHERE = frozenset({FORGET_ME})


def _served_everywhere(payload: dict[str, Any]) -> bool:
    data = payload.get("data")
    if not isinstance(data, dict):
        return False
    if payload.get("type") == discord.InteractionType.component.value:
        return str(data.get("custom_id", "")).startswith(FORGET_ME_CONFIRM)
    return (
        payload.get("type") == discord.InteractionType.application_command.value
        and data.get("name") in _COMMANDS_SERVED_EVERYWHERE
    )


def _refuse_unserved(state: ConnectionState[Any], payload: dict[str, Any]) -> asyncio.Task[None]:
    """Answers an interaction from a server Easel does not serve, in the background (the
    parser is synchronous), as discord.py would read it; nothing of it is recorded. The
    answer's task."""
    # The gateway's payload, untyped here, is what discord.py reads into an Interaction.
    interaction: discord.Interaction[Any] = discord.Interaction(data=payload, state=state)  # type: ignore[arg-type]
    log.info(
        "interaction %s in server %s refused: the server is not in EASEL_ALLOWED_SERVERS",
        interaction.id,
        interaction.guild_id,
    )
    return asyncio.create_task(_answer_unserved(interaction), name="easel-unserved-server")


async def _answer_unserved(interaction: discord.Interaction[Any]) -> None:
    try:
        if interaction.type is discord.InteractionType.autocomplete:
            await interaction.response.autocomplete([])  # it can only offer choices: none
        else:
            await interaction.response.send_message(NOT_ENABLED_HERE, ephemeral=True)
    except DISCORD_FAILED as failure:
        log.warning(
            "could not tell user %s that Easel is not enabled in server %s: %s",
            interaction.user.id,
            interaction.guild_id,
            failure,
        )


def command_contexts(*, allow_dms: bool) -> app_commands.AppCommandContext:
    """The contexts to register commands with; ``allow_dms=False`` is servers only."""
    return app_commands.AppCommandContext(guild=True, dm_channel=allow_dms, private_channel=False)


class EaselCommandTree(app_commands.CommandTree[Any]):
    """Refuses a command invoked where its contexts do not allow it, whatever Discord sent;
    tells the bot's ``acknowledge_first`` (bot.acknowledge_first) of each command as it arrives,
    and has every interaction stamped with when it came (``received_at``)."""

    def __init__(self, client: discord.Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, *args, **kwargs)
        # The answers to interactions from servers Easel does not serve, until sent (a task
        # nobody holds may be collected mid-send).
        self._refusals: set[asyncio.Task[None]] = set()
        # The bot's settings are read when an interaction comes: the tree is made before them.
        _stamp_receipts(
            self._state,
            lambda guild_id: self.client.settings.serves_server(guild_id),
            self._refusals,
        )

    async def refusals_sent(self, timeout_s: float) -> None:
        """For Easel's stop, before discord.py's HTTP session closes: the answers still being
        sent to interactions from servers Easel does not serve, for ``timeout_s`` at most
        (Discord holding them: a 429); those left then are cancelled, and awaited."""
        if not self._refusals:
            return
        _, late = await asyncio.wait(set(self._refusals), timeout=max(0.0, timeout_s))
        for answer in late:
            answer.cancel()
        if late:
            log.info("%d answer(s) to servers Easel does not serve cut short: it stops", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.type is discord.InteractionType.application_command:
            arrived = self.client.acknowledge_first.received(interaction.id)
            interaction.extras[_RECEIVED_AT] = arrived
        if interaction.guild_id is not None or self._allows_dm(interaction):
            return True
        if interaction.type is discord.InteractionType.autocomplete:
            return False  # an autocomplete can only answer with choices: offer none
        raise app_commands.NoPrivateMessage()

    def _allows_dm(self, interaction: discord.Interaction[Any]) -> bool:
        contexts = self.allowed_contexts
        command = interaction.command
        # A subcommand is registered (with its contexts) as part of its top-level group.
        root = getattr(command, "root_parent", None) or command
        if root is not None and root.allowed_contexts is not None:
            contexts = contexts.merge(root.allowed_contexts)
        return interaction.context.dm_channel and contexts.dm_channel

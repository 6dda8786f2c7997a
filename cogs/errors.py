"""The app-command error handler: a member's mistake is one ephemeral sentence (then recorded as
a refusal for the server's dashboard); Easel's storage full or busy is one plain sentence and a
warning; anything else is logged with a reference id the member can quote to the admins."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands

from bot.requests import RequestError
from bot.storage_trouble import storage_trouble
from bot.user_errors import Reason, UserError, as_sentence
from cogs.common import ALREADY_ACKNOWLEDGED, recorded_job, services_of, tell
from cogs.contexts import FORGET_ME
from inference.infotext import InfotextError

log = logging.getLogger(__name__)

# Permissions whose name in Discord's client is not discord.py's attribute name title-cased.
_CLIENT_NAMES = {"manage_guild": "Manage Server"}


def permission_names(missing: list[str]) -> str:
    """discord.py's permission attributes as Discord's client names them (``manage_guild``:
    Manage Server), so that a member finds them in the server's settings."""
    return ", ".join(_CLIENT_NAMES.get(name) or name.replace("_", " ").title() for name in missing)


def _cause(error: BaseException) -> BaseException:
    """What a command raised: discord.py wraps it in ``CommandInvokeError``."""
    return error.original if isinstance(error, app_commands.CommandInvokeError) else error


def refusal_of(error: BaseException) -> tuple[str, Reason] | None:
    """The sentence for an error the member can fix and why they were refused, or None for an
    internal failure."""
    cause = _cause(error)
    if isinstance(cause, UserError):
        return as_sentence(str(cause)), cause.reason
    # A picture's or pasted settings' text that cannot be read (wherever it is parsed).
    if isinstance(cause, RequestError | InfotextError):
        return as_sentence(str(cause)), Reason.INPUT
    if isinstance(cause, app_commands.MissingPermissions):
        needed = permission_names(cause.missing_permissions)
        sentence = f"You need the {needed} permission to use this; ask a server admin."
        return sentence, Reason.PERMISSION
    if isinstance(cause, app_commands.NoPrivateMessage):
        return "This command works only in a server; run it in a server channel.", Reason.CHANNEL
    if isinstance(cause, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {cause.retry_after:.0f} s.", Reason.COOLDOWN
    if isinstance(cause, app_commands.TransformerError):
        kind = cause.type.name.lower()
        sentence = f"That {kind} cannot be used here; pick another {kind} from the list."
        return sentence, Reason.INPUT
    if isinstance(cause, app_commands.CheckFailure):
        return str(cause) or "You are not allowed to use this command here.", Reason.PERMISSION
    return None


async def on_app_command_error(
    interaction: discord.Interaction[Any], error: app_commands.AppCommandError
) -> None:
    command = interaction.command.qualified_name if interaction.command else "?"
    await report_error(interaction, error, f"/{command}")


# Discord's refusals of an interaction's first response that leave nothing to answer with,
# and what each means for the member: too late (its 3 s passed), or answered already (the
# first try landed and its answer was lost, so discord.py sent it again; or, on a first try,
# another process on the same bot token answered it).
UNKNOWN_INTERACTION = 10062
_FIRST_RESPONSE_REFUSED = {
    UNKNOWN_INTERACTION: ("Unknown interaction", "the member is not answered"),
    ALREADY_ACKNOWLEDGED: ("already acknowledged", "Discord says it was already answered"),
}


def _first_response_refused(
    interaction: discord.Interaction[Any], error: BaseException
) -> int | None:
    """Discord's code when ``error`` is its refusal of the interaction's first response
    (``_FIRST_RESPONSE_REFUSED``), else None."""
    cause = _cause(error)
    if (
        isinstance(cause, discord.HTTPException)
        and cause.code in _FIRST_RESPONSE_REFUSED
        and not interaction.response.is_done()
    ):
        return cause.code
    return None


# What a member is told to do after an internal failure (``report_error``).
_TRY_AGAIN = "try again later, or give the reference to a server admin."
# Where a failure's log lines name no member: /forget-me's outlive the erase it asks for.
_MEMBER_UNNAMED_IN = frozenset({f"/{FORGET_ME}"})


async def report_error(
    interaction: discord.Interaction[Any],
    error: BaseException,
    where: str,
    *,
    next_step: str = _TRY_AGAIN,
) -> None:
    """Tell the member what went wrong, and record it as a refusal once they were told; log
    internal failures with a reference id, the member told ``next_step`` after it. Not
    Discord's refusal of the first response (``_first_response_refused``): the member cannot
    be told anything, and it is Discord's timing, not Easel's failure; a warning. Nor Easel's
    storage full or its database busy (``storage_trouble``): the member is told so in plain
    words, and it is one warning line, no traceback (the operator frees space, or finds the
    other writer)."""
    if (code := _first_response_refused(interaction, error)) is not None:
        name, meaning = _FIRST_RESPONSE_REFUSED[code]
        log.warning(
            "%s: Discord refused its first response (%s, code %d); %s",
            where,
            name,
            code,
            meaning,
        )
        return
    unnamed = where in _MEMBER_UNNAMED_IN
    refusal = refusal_of(error)
    cause = _cause(error)
    if refusal is None and (trouble := await storage_trouble(cause)) is not None:
        log.warning(
            "%s%s: %s (%s); the member was told so",
            where,
            "" if unnamed else f" for user {interaction.user.id}",
            trouble.what,
            cause,
        )
        message = trouble.told(recorded_job(interaction))
    elif refusal is None:
        reference = secrets.token_hex(4)
        log.error(
            "internal error %s in %s%s",
            reference,
            where,
            # Ids only: enough to find the server's admin who asks about the reference.
            ""
            if unnamed
            else f" for user {interaction.user.id} in "
            + (
                f"server {interaction.guild_id} channel {interaction.channel_id}"
                if interaction.guild_id is not None
                else "direct messages"
            ),
            exc_info=error,
        )
        message = f"Something went wrong on Easel's side (reference `{reference}`); {next_step}"
    else:
        message = refusal[0]
    try:
        await tell(interaction, message)
    except discord.HTTPException as failure:
        member = "the member" if unnamed else f"user {interaction.user.id}"
        if failure.code == ALREADY_ACKNOWLEDGED:  # the answer landed, Discord's reply lost
            log.warning("%s: Discord says %s was already answered (code 40060)", where, member)
        else:
            log.warning("could not tell %s about an error", member)
    if refusal is not None:
        await services_of(interaction).refusals.record(
            interaction.guild_id, interaction.channel_id, interaction.user.id, refusal[1], message
        )

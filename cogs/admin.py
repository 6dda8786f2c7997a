"""``/easel-admin ...``: a guild's channels, models, add-ons (LoRAs, embeddings, VAEs,
upscalers, ControlNets), quotas, priority roles, NSFW policy, banned words, the audit of every
change and a sign-in link to its dashboard. Hidden from members without Manage Server, and
checked again at run time (a guild can override command permissions)."""

from __future__ import annotations

import asyncio
import enum
import functools
import io
import json
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.history import listed_ids
from bot.memo import Memo
from bot.policy.addons import (
    ADDON_LISTS,
    AddonKind,
    listable_addons,
    model_spelt_as_installed,
    spelt_as_among,
    spelt_as_installed,
)
from bot.policy.guild import (
    AuditEntry,
    GuildList,
    GuildPolicy,
    GuildSettings,
    LimitScope,
    NsfwPolicy,
    StoredOverride,
)
from bot.policy.moderation import BANNED_WORD_MAX_LENGTH
from bot.policy.quota import DEFAULT_LIMITS, QuotaLimits
from bot.policy.unavailable import quoted
from bot.policy.visibility import RecentThreadMembers, ThreadMembershipUnknown
from bot.presets import MAX_PRESET_NAME, PRESET_AUDIT_PREFIX, Presets, as_code
from bot.shown_text import shortened
from bot.user_errors import UserError
from bot.web.dashboard import READING_RIGHTS_S, AdminRights, Dashboard
from cogs.choices import matching_choices, model_choices
from cogs.common import (
    MESSAGE_LIMIT,
    defer_thinking,
    fair_shares,
    queue_of,
    services_of,
    within_message_limit,
)
from cogs.common import quoted as escaped
from cogs.contexts import command_contexts
from cogs.visibility import (
    CHANNEL_CHECK_FAILED,
    CHANNEL_FETCH_TIMEOUT_S,
    DISCORD_FAILED,
    GuildChannelLike,
    HiddenFromEasel,
    guild_channel,
    is_age_restricted,
    log_discord_failed,
    member_may_read,
)
from cogs.wording import counted

Action = Literal["add", "remove"]
# /easel-admin quota: set the limits given, lift every limit, or remove the override.
QuotaChange = Literal["set", "unlimited", "reset"]
# /easel-admin addon's kinds, as Discord shows them (AddonKind's values).
AddonKindName = Literal["LoRA", "embedding", "VAE", "upscaler", "ControlNet"]
_ADDON_PLURALS = {
    AddonKind.LORA: "LoRAs",
    AddonKind.EMBEDDING: "embeddings",
    AddonKind.VAE: "VAEs",
    AddonKind.UPSCALER: "upscalers",
    AddonKind.CONTROLNET: "ControlNets",
}
# The lists whose narrowing (a first entry, or one removed of several) ends the jobs queued or
# rendering it leaves out (``bot.policy.delivery.placed_under_rules_of_now``), each with how a
# job is left out, as the admin is told.
_LEFT_OUT_BY = {
    GuildList.ALLOWED_CHANNEL: "in a channel the list leaves out (or a thread of one)",
    GuildList.ALLOWED_MODEL: "with a model the list leaves out",
    **{
        which: f"with {'an' if kind[0] in 'aeiou' else 'a'} {kind} the list leaves out"
        for kind, which in ADDON_LISTS.items()
    },
}
_NSFW_LABELS = {
    NsfwPolicy.ALLOW: "allow",
    NsfwPolicy.SPOILER: "post results as spoilers",
    NsfwPolicy.AGE_RESTRICTED_ONLY: "only in age-restricted channels",
}
# Discord shows a choice's name: the policy's own name (as the README writes it), not the
# enum member's, and "server" and "member" for the quota scopes, as the rest of Easel says.
_NSFW_CHOICES = [app_commands.Choice(name=p.value, value=p.value) for p in NsfwPolicy]
_SCOPE_CHOICES = [
    app_commands.Choice(name="server", value=LimitScope.GUILD.value),
    app_commands.Choice(name="role", value=LimitScope.ROLE.value),
    app_commands.Choice(name="member", value=LimitScope.USER.value),
]


def _list_name(which: GuildList) -> str:
    """A server list as /easel-admin show names it: "allowed channels", "banned words"."""
    kind = next((kind for kind, listed in ADDON_LISTS.items() if listed is which), None)
    if kind is not None:
        return f"allowed {_ADDON_PLURALS[kind]}"
    return which.value.replace("_", " ") + "s"


# What Discord's markdown could read in a banned word, escaped behind its spoiler: ``||`` would
# close it early, and a backtick or emphasis could pair with one outside and swallow its end.
_SPOILER_ESCAPES = str.maketrans({mark: "\\" + mark for mark in "\\|`*_~"})


def _list_entry(which: GuildList, entry: str, room: int | None = None) -> str:
    """One entry of a server list as Discord should show it: a channel or role as a mention,
    a banned word behind a spoiler, a name as code; a word or name cut to ``room`` characters
    first (None: whole), so the spoiler or code still closes."""
    if which is GuildList.ALLOWED_CHANNEL:
        return f"<#{entry}>"
    if which is GuildList.PRIORITY_ROLE:
        return f"<@&{entry}>"
    if which is GuildList.BANNED_WORD:
        return f"||{_cut(entry, room).translate(_SPOILER_ESCAPES)}||"
    return quoted(_cut(entry, room))


def _cut(text: str, room: int | None) -> str:
    """``text`` in at most ``room`` characters (None: whole), an ellipsis marking a cut."""
    return text if room is None else shortened(text, room)


def _escaped(text: str, room: int | None) -> str:
    """``text`` with Discord's markdown escaped, cut to ``room`` characters (None: whole)."""
    return escaped(text, len(text) * 2 + 2 if room is None else room)


def _guild_id(interaction: discord.Interaction[Any]) -> int:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return interaction.guild_id


# Past Discord's 2,000 characters (many channels or banned words) /easel-admin show cuts the
# lists (describe_guild_within), saying how many entries it left out, and attaches the whole.
SETTINGS_FILE = "easel-settings.txt"


def describe_guild(
    settings: GuildSettings,
    list_budget: int | None = None,
    operator_banned_words: int = 0,
    default_in_use: str | None = None,
    quotas: Sequence[StoredOverride] = (),
    installed: Collection[str] | None = None,
) -> str:
    """The server's settings, each list whole, or cut to ``list_budget`` characters;
    ``operator_banned_words``: how many words the bot's operator bans everywhere besides;
    ``default_in_use``: the model a request naming none gets (``GuildPolicy.default_model``),
    shown when it is not the server's own default (unset, left out of its list, or not
    ``installed``: the models the folders hold, marked so; None: not known);
    ``quotas``: the server's limit overrides (``GuildPolicy.quota_overrides``)."""

    def within_budget(shown: list[str], separator: str = ", ") -> str:
        if not shown:
            return "—"
        kept, length = 0, 0
        for item in shown:
            length += len(item) + (len(separator) if kept else 0)
            if list_budget is not None and length > list_budget:
                break
            kept += 1
        left_out = len(shown) - kept
        more = f" … and {left_out} more (all in {SETTINGS_FILE})" if left_out else ""
        return separator.join(shown[:kept]) + more

    def listed(which: GuildList) -> str:
        return within_budget(
            [_list_entry(which, entry) for entry in sorted(settings.entries(which))]
        )

    overrides = [f"{_whose(o.scope, o.subject_id)}: {_limits_text(o.limits)}" for o in quotas]

    return "\n".join(
        [
            "**Easel settings for this server**",
            f"allowed channels: {listed(GuildList.ALLOWED_CHANNEL)} (— means every channel)",
            f"allowed models: {listed(GuildList.ALLOWED_MODEL)} (— means every model)",
            *(
                f"allowed {_ADDON_PLURALS[kind]}: {listed(which)} (— means every installed {kind})"
                for kind, which in ADDON_LISTS.items()
            ),
            f"default model: {settings.default_model or 'Easel default'}"
            + _default_in_use_text(settings.default_model, default_in_use, installed),
            f"priority roles: {listed(GuildList.PRIORITY_ROLE)}",
            f"NSFW policy: {_NSFW_LABELS[NsfwPolicy(settings.nsfw_policy)]}",
            f"banned words: {listed(GuildList.BANNED_WORD)}"
            + (
                f" (and {operator_banned_words} more that Easel's operator bans everywhere)"
                if operator_banned_words
                else ""
            ),
            f"quota overrides: {within_budget(overrides, '; ')} (— means Easel's built-in "
            f"limits for everyone: {_limits_text(DEFAULT_LIMITS.as_mapping())})",
        ]
    )


def _default_in_use_text(
    stored: str | None, in_use: str | None, installed: Collection[str] | None
) -> str:
    """What follows the stored default in /easel-admin show: that it is no longer installed,
    and what a request naming no model meets (``in_use``: ``GuildPolicy.default_model``'s
    pick) when that is not the stored default rendering."""
    renders = True
    if in_use is None:
        renders = installed is None or bool(installed)
        outcome = "gets the first model installed" if renders else "fails: no model is installed"
    elif installed is not None and in_use not in installed:
        renders = False
        outcome = f"is refused: {in_use} is not installed"  # as /imagine refuses it
    else:
        outcome = f"gets {in_use}"
    if stored is not None and installed is not None and stored not in installed:
        return f" (not installed: a request naming no model {outcome})"
    if renders and in_use in (stored, None):
        return ""  # what the line says: the stored default, or Easel's
    return f" (a request naming no model {outcome})"


def describe_guild_within(
    limit: int,
    settings: GuildSettings,
    operator_banned_words: int = 0,
    default_in_use: str | None = None,
    note: str = "",
    quotas: Sequence[StoredOverride] = (),
    installed: Collection[str] | None = None,
) -> str:
    """``describe_guild`` followed by ``note``, in at most ``limit`` characters when its fixed
    lines fit: the room left with every list cut to nothing is shared between the lists that
    have entries (the quota overrides one of them). A list cut to a budget is at most that
    budget longer than cut to nothing (its "… and N more" only shortens), so the sum stays
    within the limit."""
    described = functools.partial(
        describe_guild,
        settings,
        operator_banned_words=operator_banned_words,
        default_in_use=default_in_use,
        quotas=quotas,
        installed=installed,
    )
    bare = described(0) + note
    filled = sum(1 for which in GuildList if settings.entries(which)) + bool(quotas) or 1
    budget = max(0, (limit - len(bare)) // filled)
    return described(budget) + note


def _audit_row(entry: AuditEntry, room: int | None = None) -> str:
    """An audited change in the words of /easel-admin show, with mentions for channels,
    roles and members (the journal keeps ids, setting keys and JSON); each word, name or
    value in it cut to ``room`` characters (None: whole), never a mention or a spoiler."""
    return f"<t:{int(entry.at)}:f> <@{entry.user_id}> {_change_text(entry, room)}"


def _change_text(entry: AuditEntry, room: int | None) -> str:
    old, new = entry.old_value, entry.new_value
    if entry.setting in set(GuildList):
        which = GuildList(entry.setting)
        change = "added" if old is None else "removed"
        return f"{_list_name(which)}: {change} {_list_entry(which, new or old or '', room)}"
    if entry.setting == "nsfw_policy":
        return f"NSFW policy: {_cut(_nsfw_label(old), room)} → {_cut(_nsfw_label(new), room)}"
    if entry.setting == "default_model":
        before, after = (_cut(model or "Easel default", room) for model in (old, new))
        return f"default model: {before} → {after}"
    scope, _, subject = entry.setting.removeprefix("quota:").partition(":")
    if entry.setting.startswith("quota:") and scope in set(LimitScope):
        whose = _whose(LimitScope(scope), subject)
        if new is None:
            return f"quota for {whose}: override removed"
        return f"quota for {whose}: {_cut(_limits_text(json.loads(new)), room)}"
    # A server preset's row holds a member's words (its name, its negative prompt): escaped,
    # so that they cannot format, mask a link or show a mention in the moderators' log.
    cut = _escaped if entry.setting.startswith(PRESET_AUDIT_PREFIX) else _cut
    setting, before, after = (cut(text, room) for text in (entry.setting, old or "—", new or "—"))
    return f"{setting}: {before} → {after}"


def _whose(scope: LimitScope, subject_id: int | str) -> str:
    """Whom a quota override limits, as a mention ("everyone": the server's default)."""
    if scope is LimitScope.GUILD:
        return "everyone"
    return f"<@&{subject_id}>" if scope is LimitScope.ROLE else f"<@{subject_id}>"


def _limits_text(limits: Mapping[str, float | None]) -> str:
    """Quota limits as /easel-admin quota confirms them: "images per day: 5"."""
    given = [f"{k.replace('_', ' ')}: {v:g}" for k, v in limits.items() if v is not None]
    return ", ".join(given) or "unlimited"


def _nsfw_label(policy: str | None) -> str:
    return next((label for p, label in _NSFW_LABELS.items() if p.value == policy), policy or "—")


def audit_text(entries: Sequence[AuditEntry]) -> str:
    """/easel-admin audit's message: settings changes, and what moderators did to jobs here
    (withdrawals, restores), the one log of admin-side changes a server has. Every row whole
    while they fit one message; else each long row is cut to its share (``fair_shares``), so
    that a long row never hides the others."""
    title = "**Latest Easel settings changes, withdrawals and restores**"
    rows = [_audit_row(entry) for entry in entries]
    shares = fair_shares([len(row) for row in rows], MESSAGE_LIMIT - len(title) - len(rows))
    return "\n".join(
        [
            title,
            *(
                row if len(row) <= share else _audit_row_within(entry, share)
                for entry, row, share in zip(entries, rows, shares, strict=True)
            ),
        ]
    )


def _audit_row_within(entry: AuditEntry, share: int) -> str:
    """``entry``'s row with its values cut as little as fits ``share`` characters (its
    mentions and labels are never cut: under 100 characters, far less than the share of one
    of the 15 rows shown)."""
    room = bisect_right(range(1, MESSAGE_LIMIT), share, key=lambda r: len(_audit_row(entry, r)))
    return _audit_row(entry, max(room, 1))


def _missing_audit_log(interaction: discord.Interaction[Any]) -> str:
    """A line when Easel lacks View Audit Log here: kicks and timeouts reach it only through
    the audit log (cogs.bans), so a kicked or timed-out member's jobs would go on. Discord's
    own reckoning of Easel's permissions, sent with the interaction, is never out of date."""
    if interaction.app_permissions.view_audit_log:
        return ""
    return "\nkicks and timeouts: not seen (grant Easel the View Audit Log permission)"


class AdminCog(commands.Cog):
    admin = app_commands.Group(
        name="easel-admin",
        description="Server settings for Easel (Manage Server)",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
        # Explicit: the tree's contexts include DMs when the operator allows them.
        allowed_contexts=command_contexts(allow_dms=False),
    )

    def __init__(self, policy: GuildPolicy, presets: Presets) -> None:
        self._policy = policy
        self._presets = presets
        self.dashboard_site: Dashboard | None = None  # set when the web server runs

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    async def _done(self, interaction: discord.Interaction[Any], message: str) -> None:
        """The admin's answer; one quoting long values (a preset's negative prompt) is cut
        to fit, never refused: the change it reports was made. A follow-up once deferred."""
        message = within_message_limit(message)
        none = discord.AllowedMentions.none()
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True, allowed_mentions=none)
            return
        await interaction.response.send_message(message, ephemeral=True, allowed_mentions=none)

    async def _change(
        self,
        interaction: discord.Interaction[Any],
        which: GuildList,
        action: Action,
        value: str,
        when_empty: str | None = None,
    ) -> None:
        """``when_empty``: what an empty ``which`` means, said when a removal empties it."""
        guild_id = _guild_id(interaction)
        changed = await self._policy.change_list(
            guild_id, interaction.user.id, which, value, add=action == "add"
        )
        shown, list_name = _list_entry(which, value), _list_name(which)
        if not changed:
            state = "already" if action == "add" else "not"
            await self._done(interaction, f"{shown} is {state} in the {list_name}; no change.")
            return
        verb = "Added" if action == "add" else "Removed"
        said = f"{verb} {shown} {'to' if action == 'add' else 'from'} the {list_name}."
        entries = (await self._policy.settings(guild_id)).entries(which)
        if when_empty is not None and action == "remove" and not entries:
            said += f" The list is now empty: {when_empty}."
        first = action == "add" and len(entries) == 1
        narrowed = which in _LEFT_OUT_BY and (first or (action == "remove" and entries))
        if narrowed:
            # The count reads every job queued here: thousands take seconds, past Discord's 3 s.
            await defer_thinking(interaction, private=True)
            said += await self._what_ends(guild_id, which, first=first)
        await self._done(interaction, said)
        if narrowed:
            # Those rendering that it leaves out stop now, not at their last step.
            await queue_of(interaction).stop_refused_now(guild_id)

    async def _what_ends(self, guild_id: int, which: GuildList, *, first: bool) -> str:
        """What narrowing ``which`` (its first entry, which closes every other channel, model
        or add-on of its kind; or one removed of several) changes, said with it: the jobs
        queued or rendering that it leaves out end unposted and refunded: at once when
        rendering (``JobQueue.stop_refused_now``), else when they would start, which judges
        them by the lists of then (an undo before it lets them render)."""
        if not first:
            only = ""
        elif which is GuildList.ALLOWED_CHANNEL:
            only = " Easel now answers only in the listed channels (and their threads)."
        else:
            only = (
                f" Easel now allows only the listed {_list_name(which).removeprefix('allowed ')}."
            )
        ended = await self._policy.unfinished_left_out(guild_id, which)
        if not ended:
            return only
        one = ended == 1
        return (
            f"{only} {counted(ended, 'job')} queued or rendering now {_LEFT_OUT_BY[which]} "
            f"{'ends' if one else 'end'} unposted and refunded "
            f"({'its maker is' if one else 'their makers are'} told): "
            + (
                "at once if rendering, else when it would start unless the list allows it "
                "again by then."
                if one
                else "those rendering at once, those queued when they would start unless the "
                "list allows them again by then."
            )
        )

    @admin.command(name="show", description="Every Easel setting of this server")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        settings = await self._policy.settings(_guild_id(interaction))
        quotas = await self._policy.quota_overrides(_guild_id(interaction))
        operator_words = self._policy.operator_banned_word_count
        # As a request naming no model resolves it (``GuildPolicy.admit``): a default removed
        # since is passed over, one being copied over is held.
        held = await self._policy.installed_now()
        in_use = self._policy.default_model(settings, held)
        missing = _missing_audit_log(interaction)
        whole = describe_guild(settings, None, operator_words, in_use, quotas, held) + missing
        if len(whole) <= MESSAGE_LIMIT:
            await self._done(interaction, whole)
            return
        await interaction.response.send_message(
            describe_guild_within(
                MESSAGE_LIMIT, settings, operator_words, in_use, missing, quotas, held
            ),
            file=discord.File(io.BytesIO(whole.encode()), filename=SETTINGS_FILE),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @admin.command(name="channel", description="Allow or disallow Easel in a channel")
    @app_commands.describe(action="add: allow it; remove: stop allowing it", channel="The channel")
    async def channel(
        self,
        interaction: discord.Interaction[Any],
        action: Action,
        # A thread too, so that its refusal can name its channel (else Discord's own).
        channel: app_commands.AppCommandChannel | app_commands.AppCommandThread,
    ) -> None:
        if isinstance(channel, app_commands.AppCommandThread):
            # The list is of channels: a thread or forum post is enabled with its own.
            raise UserError(
                f"<#{channel.id}> is a thread; threads and forum posts are allowed with the "
                f"channel they are in: {action} <#{channel.parent_id}> instead."
            )
        await self._change(interaction, GuildList.ALLOWED_CHANNEL, action, str(channel.id))

    @admin.command(name="model", description="Allow or disallow a model on this server")
    @app_commands.describe(action="add: allow it; remove: stop allowing it", name="Model name")
    async def model(
        self,
        interaction: discord.Interaction[Any],
        action: Action,
        name: app_commands.Range[str, 1, 100],
    ) -> None:
        if action == "add":  # one installed; a removal takes any listed (it may be gone)
            registry = services_of(interaction).registry
            name = model_spelt_as_installed(name, await asyncio.to_thread(registry.names))
        await self._change(
            interaction,
            GuildList.ALLOWED_MODEL,
            action,
            name,
            when_empty="every installed model is allowed here",
        )

    @admin.command(
        name="addon", description="Allow or disallow a LoRA, embedding, VAE, upscaler or ControlNet"
    )
    @app_commands.describe(
        kind="Which kind of add-on",
        action="add: allow it (a kind with none listed allows every one); remove: stop allowing it",
        name="Its name, as installed",
    )
    async def addon(
        self,
        interaction: discord.Interaction[Any],
        kind: AddonKindName,
        action: Action,
        name: app_commands.Range[str, 1, 100],
    ) -> None:
        addon_kind = AddonKind(kind)
        if action == "add":
            registry = services_of(interaction).registry
            installed = await asyncio.to_thread(listable_addons, registry, addon_kind)
            spelt = spelt_as_installed(kind, name, installed)
        else:  # one listed, in any letter case: the list holds it as it was added
            listed = (await self._policy.settings(_guild_id(interaction))).entries(
                ADDON_LISTS[addon_kind]
            )
            spelt = spelt_as_among(name, listed) or name
        await self._change(
            interaction,
            ADDON_LISTS[addon_kind],
            action,
            spelt,
            f"every installed {kind} is allowed here",
        )

    @addon.autocomplete("name")
    async def addon_names(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        """The installed files of the kind picked, and those this server lists (one removed
        from the folders since can still be taken off the list); nothing for a member without
        Manage Server, who may see the command where a server changed its permissions:
        discord.py runs no ``interaction_check`` for an autocomplete."""
        if not interaction.permissions.manage_guild:
            return []
        kind = AddonKind(interaction.namespace.kind or AddonKind.LORA)
        registry = services_of(interaction).registry
        installed = await asyncio.to_thread(listable_addons, registry, kind)
        settings = await self._policy.settings(_guild_id(interaction))
        listed = settings.entries(ADDON_LISTS[kind]) - set(installed)
        return matching_choices([*installed, *sorted(listed, key=str.casefold)], current)

    @admin.command(name="default-model", description="The model used when a request names none")
    @app_commands.describe(name="Model name; leave empty for Easel's default")
    @app_commands.autocomplete(name=model_choices)
    async def default_model(
        self,
        interaction: discord.Interaction[Any],
        name: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        if name is not None:  # a default nobody installed would refuse every plain /imagine
            installed = await asyncio.to_thread(services_of(interaction).list_models)
            name = spelt_as_installed("model", name, installed)
        await self._policy.set_default_model(_guild_id(interaction), interaction.user.id, name)
        await self._done(interaction, f"Default model: {name or 'Easel default'}.")

    @admin.command(
        name="priority-role",
        description="Members with this role go before this server's other members",
    )
    @app_commands.describe(action="add or remove", role="The role")
    async def priority_role(
        self, interaction: discord.Interaction[Any], action: Action, role: discord.Role
    ) -> None:
        await self._change(interaction, GuildList.PRIORITY_ROLE, action, str(role.id))

    @admin.command(name="nsfw", description="How this server handles NSFW generation")
    @app_commands.describe(
        policy="allow, post results as spoilers, or age-restricted channels only"
    )
    @app_commands.choices(policy=_NSFW_CHOICES)
    async def nsfw(
        self, interaction: discord.Interaction[Any], policy: app_commands.Choice[str]
    ) -> None:
        chosen = NsfwPolicy(policy.value)
        await self._policy.set_nsfw_policy(_guild_id(interaction), interaction.user.id, chosen)
        await self._done(interaction, f"NSFW policy: {_NSFW_LABELS[chosen]}.")

    @admin.command(name="banned-word", description="Refuse prompts containing a word")
    @app_commands.describe(action="add or remove", word="A word or phrase (any case)")
    async def banned_word(
        self,
        interaction: discord.Interaction[Any],
        action: Action,
        word: app_commands.Range[str, 1, BANNED_WORD_MAX_LENGTH],
    ) -> None:
        await self._change(interaction, GuildList.BANNED_WORD, action, word)

    @admin.command(name="quota", description="Limits for the server, a role or a member")
    @app_commands.describe(
        scope="server: everyone's default; role or member: an override",
        role="The role, for scope role",
        member="The member, for scope member",
        images_per_day="Pictures a day (empty: no limit on this)",
        images_per_week="Pictures a week (empty: no limit on this)",
        images_per_month="Pictures a month (empty: no limit on this)",
        gpu_seconds_per_day="GPU seconds a day (empty: no limit on this)",
        change="set (default): the limits given; unlimited: no limits; reset: remove the "
        "override, so the next level (role, server, Easel's built-in) applies again",
    )
    @app_commands.choices(scope=_SCOPE_CHOICES)
    async def quota(
        self,
        interaction: discord.Interaction[Any],
        scope: app_commands.Choice[str],
        role: discord.Role | None = None,
        member: discord.Member | None = None,
        images_per_day: app_commands.Range[int, 0, 100_000] | None = None,
        images_per_week: app_commands.Range[int, 0, 1_000_000] | None = None,
        images_per_month: app_commands.Range[int, 0, 10_000_000] | None = None,
        gpu_seconds_per_day: app_commands.Range[float, 0.0, 86_400.0] | None = None,
        change: QuotaChange = "set",
    ) -> None:
        guild_id = _guild_id(interaction)
        limited = LimitScope(scope.value)
        if limited is LimitScope.GUILD:
            subject_id, subject = guild_id, "everyone"
        elif limited is LimitScope.ROLE:
            if role is None:
                raise UserError("Scope role needs the role option; pick the role to limit.")
            subject_id, subject = role.id, role.mention
        else:
            if member is None:
                raise UserError("Scope member needs the member option; pick the member to limit.")
            subject_id, subject = member.id, member.mention
        limits = QuotaLimits(
            images_per_day=images_per_day,
            images_per_week=images_per_week,
            images_per_month=images_per_month,
            gpu_seconds_per_day=gpu_seconds_per_day,
        )
        given = _limits_text(limits.as_mapping())
        if (change == "set") == (given == "unlimited"):
            raise UserError(
                f"Give {subject} at least one limit with change:set; or change:reset to remove "
                f"the override (then {await self._next_level(guild_id, limited)} apply), or "
                "change:unlimited for no limits at all."
                if change == "set"
                else f"change:{change} takes no limits; leave them empty, or use change:set."
            )
        admin_id = interaction.user.id
        if change == "reset":
            removed = await self._policy.set_quota(guild_id, admin_id, limited, subject_id, None)
            now = await self._next_level(guild_id, limited)
            said = "Removed the quota override" if removed else "There was no quota override"
            await self._done(interaction, f"{said} for {subject}: {now} apply.")
            return
        await self._policy.set_quota(guild_id, admin_id, limited, subject_id, limits)
        await self._done(
            interaction,
            f"Quota for {subject}: {given} (change:reset removes this override, so "
            f"{await self._next_level(guild_id, limited)} apply again).",
        )

    async def _next_level(self, guild_id: int, scope: LimitScope) -> str:
        """What limits apply where an override of ``scope`` is missing, in words."""
        server = await self._policy.server_quota(guild_id)
        fallback = (
            f"the server's default limits ({_limits_text(server)})"
            if server is not None and scope is not LimitScope.GUILD
            else f"Easel's built-in limits ({_limits_text(DEFAULT_LIMITS.as_mapping())})"
        )
        return f"their roles' overrides, else {fallback}" if scope is LimitScope.USER else fallback

    @admin.command(name="preset", description="Share one of your presets with the server")
    @app_commands.describe(
        action="add: copy your own preset of that name for everyone here; remove: delete it",
        name="The preset's name",
    )
    async def preset(
        self,
        interaction: discord.Interaction[Any],
        action: Action,
        name: app_commands.Range[str, 1, MAX_PRESET_NAME],
    ) -> None:
        guild_id = _guild_id(interaction)
        if action == "add":
            shared = await self._presets.share(guild_id, interaction.user.id, name)
            await self._done(interaction, f"Server preset saved: {shared.describe()}")
        elif await self._presets.unshare(guild_id, interaction.user.id, name):
            await self._done(interaction, f"Server preset {as_code(name)} deleted.")
        else:
            await self._done(interaction, f"This server has no preset named {as_code(name)}.")

    @admin.command(
        name="restore", description="Show and use again a job a moderator removed or Easel withheld"
    )
    @app_commands.describe(job="The job id (in its result's caption)")
    async def restore(
        self, interaction: discord.Interaction[Any], job: app_commands.Range[str, 1, 32]
    ) -> None:
        job_id = job.strip().lower()
        history = services_of(interaction).history
        restored = await history.restore(_guild_id(interaction), job_id, interaction.user.id)
        with_it = restored.with_it
        private = await history.private_among(with_it)
        also = (
            f" So may those of the {counted(len(with_it), 'job')} withdrawn with it (made from "
            f"it, or with its pixels): {listed_ids(with_it, private)}."
            if with_it
            else ""
        )
        undone = (
            "its pictures may be shown and used again (`/show` by its maker posts them; the "
            "deleted messages, its other posts and copies by DM the withdrawal deleted, stay "
            "deleted)"
            if restored.has_pictures
            else "it was stopped before it rendered, so it has no pictures to show; its maker "
            "may submit it again"
        )
        await self._done(
            interaction,
            f"Restored job `{job_id}`: {undone}.{also} A job withdrawn at "
            "another moment (its own post deleted before or after) stays withdrawn; restore it "
            "by its id. One whose post went in the same bulk delete came back with it.",
        )

    @admin.command(name="audit", description="The latest changes to Easel's settings here")
    async def audit(self, interaction: discord.Interaction[Any]) -> None:
        entries = await self._policy.audit_log(_guild_id(interaction))
        if not entries:
            await self._done(interaction, "No settings were changed on this server yet.")
            return
        await self._done(interaction, audit_text(entries))

    @admin.command(name="dashboard", description="A sign-in link to this server's dashboard")
    async def dashboard(self, interaction: discord.Interaction[Any]) -> None:
        guild_id = _guild_id(interaction)
        if self.dashboard_site is None:
            raise UserError(
                "The dashboard needs Easel's web server, which is off; "
                "ask the bot's operator to set EASEL_PUBLIC_URL."
            )
        view = discord.ui.View(timeout=None)
        link = self.dashboard_site.link_for(interaction.user.id, guild_id)
        view.add_item(discord.ui.Button(label="Open the dashboard", url=link))
        await interaction.response.send_message(
            "Your sign-in link to this server's Easel dashboard: yours alone, it works once "
            "and expires in 15 minutes; the session it opens lasts 8 hours.",
            view=view,
            ephemeral=True,
        )


# Discord's answer about a channel discord.py's cache lacks (an archived thread, a deleted
# channel) is kept this long for the dashboard, for this many channels at most.
LOOKED_UP_KEPT_S = 300.0
LOOKED_UP_KEPT = 10_000
# A channel (or an admin's place in a private thread) Discord did not answer about is asked
# again after this long, whoever asks: a dashboard's window (its page polls every 3 s).
UNANSWERED_KEPT_S = 15.0
# The dashboard's questions to Discord about channels in flight at most, all servers and
# admins together: a server's history may name hundreds of archived threads.
ASKED_AT_ONCE = 6
# Of those, one server's at most: one server's history does not hold up another's page.
ASKED_AT_ONCE_PER_SERVER = 3
# How long one of an admin's polls waits for those answers: the rest are unanswered for now,
# and an answer that comes later is kept for the next poll.
ANSWERS_WAITED_S = 2.0
# One server's questions queued or in flight at most: about as many as can be answered while a
# poll waits, however slow Discord is; the rest are unanswered for now and queued by a later
# poll (the newest channels first), so the queue never outgrows a poll.
QUEUED_PER_SERVER = round(ASKED_AT_ONCE * ANSWERS_WAITED_S / CHANNEL_FETCH_TIMEOUT_S)
# The admins whose member, as asked at the start of their window, is kept for its later asks.
ADMINS_KEPT = 1_000


class _Reading(enum.Enum):
    """What the dashboard learnt of a channel for one admin."""

    READABLE = enum.auto()
    UNREADABLE = enum.auto()  # their permissions, a private thread they are not in, or gone
    HIDDEN_FROM_EASEL = enum.auto()  # Discord refuses Easel the channel: nobody's is known
    UNANSWERED = enum.auto()  # Discord did not answer: asked again at a later poll


@dataclass(frozen=True)
class _LookedUp:
    channel: GuildChannelLike | None  # None: gone, another server's, or unanswered
    hidden_from_easel: bool = False
    unanswered_at: float | None = None  # when Discord did not answer (the admins' clock)


T = TypeVar("T")


@dataclass
class _ServerAsks:
    at_once: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(ASKED_AT_ONCE_PER_SERVER)
    )
    queued: set[Hashable] = field(default_factory=set)  # queued or in flight
    asking: int = 0  # ``ask`` calls begun and not ended


class _Asks:
    """The dashboard's questions to Discord: ``ASKED_AT_ONCE`` in flight in all, at most
    ``ASKED_AT_ONCE_PER_SERVER`` of them one server's, and ``QUEUED_PER_SERVER`` of one
    server's queued or in flight (``queue`` says whether there is room for one more)."""

    def __init__(self) -> None:
        self._at_once = asyncio.Semaphore(ASKED_AT_ONCE)
        self._servers: dict[int, _ServerAsks] = {}  # those with a question queued

    def queue(self, guild_id: int, question: Hashable) -> bool:
        """Whether ``question`` is queued (it was, or there is room): ``ask`` it at once."""
        server = self._servers.setdefault(guild_id, _ServerAsks())
        if question not in server.queued:
            if len(server.queued) >= QUEUED_PER_SERVER:
                return False
            server.queued.add(question)
        return True

    async def ask(self, guild_id: int, question: Hashable, answer: Callable[[], Awaitable[T]]) -> T:
        """``answer()`` in its turn (``question`` queued by ``queue``)."""
        server = self._servers.setdefault(guild_id, _ServerAsks())
        server.asking += 1
        try:
            async with server.at_once, self._at_once:
                return await answer()
        finally:
            server.asking -= 1
            server.queued.discard(question)
            if not server.asking and not server.queued and self._servers.get(guild_id) is server:
                del self._servers[guild_id]


class DiscordServerAdmins:
    """Who manages a server and which of its channels they may read, asked of Discord when
    an admin signs in to the dashboard and while their session lasts (``Dashboard``)."""

    def __init__(
        self,
        client: discord.Client,
        thread_members: RecentThreadMembers,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._thread_members = thread_members
        self._clock = clock
        self._looked_up: Memo[tuple[int, int], _LookedUp] = Memo(
            LOOKED_UP_KEPT, ttl_s=LOOKED_UP_KEPT_S, clock=clock
        )
        # (thread, member): whether an admin may read a private thread, as Discord said: an
        # answer serves the one poll that takes it (a poll that stopped waiting leaves it to
        # the next), "unanswered" every poll for its ``UNANSWERED_KEPT_S``.
        self._memberships: Memo[tuple[int, int], _Reading] = Memo(
            LOOKED_UP_KEPT, ttl_s=UNANSWERED_KEPT_S, clock=clock
        )
        self._asks = _Asks()
        # Each server's ``Guild`` as discord.py held it at its dashboards' last ask (by ``id``:
        # an old one is not kept alive), to tell when a reconnect rebuilt it.
        self._servers_seen: dict[int, int] = {}
        # (server, admin): the member as Discord gave it at the start of their window.
        self._members: Memo[tuple[int, int], discord.Member] = Memo(
            ADMINS_KEPT, ttl_s=READING_RIGHTS_S, clock=clock
        )

    def name_of(self, guild_id: int) -> str:
        guild = self._client.get_guild(guild_id)
        return guild.name if guild is not None else str(guild_id)

    def forget_channel(self, guild_id: int, channel_id: int) -> None:
        """A channel or thread was deleted: what Discord said of it is not used again."""
        self._looked_up.drop((guild_id, channel_id))

    async def rights(
        self,
        guild_id: int,
        user_id: int,
        channel_ids: Collection[int],
        *,
        within_window: bool = False,
    ) -> AdminRights:
        # The member's current roles (one call: Manage Server or Administrator, else refused;
        # a kick or a ban is "no longer a member"; ``within_window``: as asked at the window's
        # start), the channels' overwrites from the cache, and one call per private thread
        # they do not manage (cogs.visibility's rules). A channel the cache lacks (an archived
        # thread) is asked of Discord (``_channel``). One Discord hides from Easel, or that
        # Discord does not answer about, is not readable either, and the page says which.
        guild = self._client.get_guild(guild_id)
        if self._servers_seen.get(guild_id) != id(guild):  # left, or rebuilt by a reconnect
            self._servers_seen.pop(guild_id, None)
            # What Discord said of its channels goes: a fetched thread holds the old server.
            self._looked_up.drop_where(lambda looked: looked[0] == guild_id)
        if guild is None:
            return AdminRights("Easel is no longer in that server.")
        self._servers_seen[guild_id] = id(guild)
        key = (guild_id, user_id)
        kept = self._members.kept(key) if within_window else None
        if kept is None or kept.guild is not guild:  # a reconnect rebuilt the server
            self._members.drop(key)
        try:
            member = await self._members.get(key, lambda: guild.fetch_member(user_id))
        except discord.NotFound:
            return AdminRights("You are no longer a member of that server.")
        except DISCORD_FAILED:
            return AdminRights(
                "Discord did not answer; reload this page in a minute.", discord_failed=True
            )
        permissions = member.guild_permissions
        if not (permissions.manage_guild or permissions.administrator):
            return AdminRights("You no longer have the Manage Server permission there.")
        # The newest first (a snowflake grows with time): while Discord is slow, the channels
        # of the gallery's newest pictures are likelier among those queued first.
        asked = sorted(channel_ids, reverse=True)
        readings = await asyncio.gather(*(self._reading_waited(guild, c, member) for c in asked))
        read = dict(zip(asked, readings, strict=True))
        return AdminRights(
            None,
            frozenset(c for c, (reading, _) in read.items() if reading is _Reading.READABLE),
            frozenset(
                c
                for c, (_, channel) in read.items()
                if channel is not None and is_age_restricted(channel)
            ),
            hidden_from_easel=frozenset(
                c for c, (reading, _) in read.items() if reading is _Reading.HIDDEN_FROM_EASEL
            ),
            unanswered=frozenset(
                c for c, (reading, _) in read.items() if reading is _Reading.UNANSWERED
            ),
        )

    async def _reading_waited(
        self, guild: discord.Guild, channel_id: int, member: discord.Member
    ) -> tuple[_Reading, GuildChannelLike | None]:
        """``_reading`` within ``ANSWERS_WAITED_S``; past it, unanswered for now (a question
        to Discord goes on, its answer kept for the next poll: ``Memo`` shields it)."""
        try:
            async with asyncio.timeout(ANSWERS_WAITED_S):
                return await self._reading(guild, channel_id, member)
        except TimeoutError:
            return _Reading.UNANSWERED, None

    async def _reading(
        self, guild: discord.Guild, channel_id: int, member: discord.Member
    ) -> tuple[_Reading, GuildChannelLike | None]:
        """Whether ``member`` may read the channel (``member_may_read``), with the channel."""
        looked = await self._channel(guild, channel_id)
        if looked.hidden_from_easel:
            return _Reading.HIDDEN_FROM_EASEL, None
        channel = looked.channel
        if looked.unanswered_at is not None:
            return _Reading.UNANSWERED, None
        if channel is None:  # gone, or another server's
            return _Reading.UNREADABLE, None
        return await self._member_reading(channel, member), channel

    async def _member_reading(self, channel: GuildChannelLike, member: discord.Member) -> _Reading:
        """``member_may_read``; in a private thread, whose membership may be asked of Discord,
        one question among ``_Asks``', its answer kept for the next poll (``_memberships``)."""
        if not (isinstance(channel, discord.Thread) and channel.is_private()):
            return await _reading_of(channel, member, self._thread_members)
        key = (channel.id, member.id)
        if self._memberships.kept(key) is None and not self._asks.queue(channel.guild.id, key):
            return _Reading.UNANSWERED  # queued by a later poll
        reading = await self._memberships.get(
            key,
            lambda: self._asks.ask(
                channel.guild.id,
                key,
                lambda: _reading_of(channel, member, self._thread_members),
            ),
        )
        if reading is not _Reading.UNANSWERED:
            self._memberships.drop(key)
        return reading

    async def _channel(self, guild: discord.Guild, channel_id: int) -> _LookedUp:
        """The server's channel from discord.py's cache, or Discord's answer (``guild_channel``)
        as given within ``LOOKED_UP_KEPT_S`` (``UNANSWERED_KEPT_S`` when there was none): a
        server's archived threads and deleted channels are asked once in that long, not at
        each of its admins' windows, one question among ``_Asks``'. What such a thread may
        be read by is its parent's, from the cache, each time: one fetched before a reconnect
        rebuilt the server (its parent and roles the old server's) is asked again."""
        cached = guild.get_channel_or_thread(channel_id)
        if cached is not None:
            return _LookedUp(cached)
        key = (guild.id, channel_id)
        kept = self._looked_up.kept(key)
        if kept is not None:
            if _still_true(kept, guild, self._clock()):
                return kept
            self._looked_up.drop(key)
        if not self._asks.queue(guild.id, channel_id):
            return _LookedUp(None, unanswered_at=self._clock())  # queued by a later poll

        async def looked_up() -> _LookedUp:
            try:
                channel, _ = await guild_channel(self._client, guild, guild.id, channel_id)
            except HiddenFromEasel:
                return _LookedUp(None, hidden_from_easel=True)
            except CHANNEL_CHECK_FAILED as failed:  # told once, not at every poll
                log_discord_failed(f"what channel {channel_id} is (the dashboard)", failed)
                return _LookedUp(None, unanswered_at=self._clock())
            return _LookedUp(channel)

        return await self._looked_up.get(
            key, lambda: self._asks.ask(guild.id, channel_id, looked_up)
        )


async def _reading_of(
    channel: GuildChannelLike, member: discord.Member, recent: RecentThreadMembers
) -> _Reading:
    """``member_may_read`` as a ``_Reading``."""
    try:
        may = await member_may_read(channel, member, recent)
    except HiddenFromEasel:
        return _Reading.HIDDEN_FROM_EASEL
    except ThreadMembershipUnknown:  # logged where Discord was asked
        return _Reading.UNANSWERED
    return _Reading.READABLE if may else _Reading.UNREADABLE


def _still_true(looked: _LookedUp, guild: discord.Guild, now: float) -> bool:
    """Whether what Discord said of a channel may be used for ``guild`` as discord.py holds it
    now: no answer is kept past ``UNANSWERED_KEPT_S``, nor a channel bound to an older server."""
    if looked.unanswered_at is not None:
        return now - looked.unanswered_at < UNANSWERED_KEPT_S
    return looked.channel is None or looked.channel.guild is guild

"""``/easel-admin ...``: a guild's channels, models, add-ons (LoRAs, embeddings, VAEs,
upscalers, ControlNets), quotas, priority roles, NSFW policy, banned words, the audit of every
change and a sign-in link to its dashboard. Hidden from members without Manage Server, and
checked again at run time (a guild can override command permissions)."""

from __future__ import annotations

import asyncio
import io
import json
from bisect import bisect_right
from collections.abc import Collection, Sequence
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.history import listed_ids
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
)
from bot.policy.moderation import BANNED_WORD_MAX_LENGTH
from bot.policy.quota import QuotaLimits
from bot.policy.unavailable import quoted
from bot.policy.visibility import RecentThreadMembers, ThreadMembershipUnknown
from bot.presets import MAX_PRESET_NAME, PRESET_AUDIT_PREFIX, Presets
from bot.user_errors import UserError
from bot.web.dashboard import AdminRights, Dashboard
from cogs.choices import matching_choices, model_choices
from cogs.common import MESSAGE_LIMIT, services_of
from cogs.common import quoted as escaped
from cogs.contexts import command_contexts
from cogs.visibility import DISCORD_FAILED, is_age_restricted, member_may_read
from cogs.wording import counted

Action = Literal["add", "remove"]
# /easel-admin addon's kinds, as Discord shows them (AddonKind's values).
AddonKindName = Literal["LoRA", "embedding", "VAE", "upscaler", "ControlNet"]
_ADDON_PLURALS = {
    AddonKind.LORA: "LoRAs",
    AddonKind.EMBEDDING: "embeddings",
    AddonKind.VAE: "VAEs",
    AddonKind.UPSCALER: "upscalers",
    AddonKind.CONTROLNET: "ControlNets",
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
    return text if room is None or len(text) <= room else text[: room - 1] + "…"


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
) -> str:
    """The server's settings, each list whole, or cut to ``list_budget`` characters;
    ``operator_banned_words``: how many words the bot's operator bans everywhere besides;
    ``default_in_use``: the model a request naming none gets (``GuildPolicy.default_model``),
    shown when it is not the server's own default (unset, or left out of its list)."""

    def listed(which: GuildList) -> str:
        shown = [_list_entry(which, entry) for entry in sorted(settings.entries(which))]
        if not shown:
            return "—"
        kept, length = 0, 0
        for item in shown:
            length += len(item) + (2 if kept else 0)  # ", " between
            if list_budget is not None and length > list_budget:
                break
            kept += 1
        left_out = len(shown) - kept
        more = f" … and {left_out} more (all in {SETTINGS_FILE})" if left_out else ""
        return ", ".join(shown[:kept]) + more

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
            + (
                f" (a request naming no model gets {default_in_use})"
                if default_in_use is not None and default_in_use != settings.default_model
                else ""
            ),
            f"priority roles: {listed(GuildList.PRIORITY_ROLE)}",
            f"NSFW policy: {_NSFW_LABELS[NsfwPolicy(settings.nsfw_policy)]}",
            f"banned words: {listed(GuildList.BANNED_WORD)}"
            + (
                f" (and {operator_banned_words} more that Easel's operator bans everywhere)"
                if operator_banned_words
                else ""
            ),
        ]
    )


def describe_guild_within(
    limit: int,
    settings: GuildSettings,
    operator_banned_words: int = 0,
    default_in_use: str | None = None,
    note: str = "",
) -> str:
    """``describe_guild`` followed by ``note``, in at most ``limit`` characters when its fixed
    lines fit: the room left with every list cut to nothing is shared between the lists that
    have entries. A list cut to a budget is at most that budget longer than cut to nothing
    (its "… and N more" only shortens), so the sum stays within the limit."""
    bare = describe_guild(settings, 0, operator_banned_words, default_in_use) + note
    filled = sum(1 for which in GuildList if settings.entries(which)) or 1
    budget = max(0, (limit - len(bare)) // filled)
    return describe_guild(settings, budget, operator_banned_words, default_in_use) + note


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
        whose = {
            LimitScope.GUILD: "everyone",
            LimitScope.ROLE: f"<@&{subject}>",
            LimitScope.USER: f"<@{subject}>",
        }[LimitScope(scope)]
        return f"quota for {whose}: {_cut(_limits_text(json.loads(new or '{}')), room)}"
    # A server preset's row holds a member's words (its name, its negative prompt): escaped,
    # so that they cannot format, mask a link or show a mention in the moderators' log.
    cut = _escaped if entry.setting.startswith(PRESET_AUDIT_PREFIX) else _cut
    setting, before, after = (cut(text, room) for text in (entry.setting, old or "—", new or "—"))
    return f"{setting}: {before} → {after}"


def _limits_text(limits: dict[str, float | None]) -> str:
    """Quota limits as /easel-admin quota confirms them: "images per day: 5"."""
    given = [f"{k.replace('_', ' ')}: {v:g}" for k, v in limits.items() if v is not None]
    return ", ".join(given) or "unlimited"


def _nsfw_label(policy: str | None) -> str:
    return next((label for p, label in _NSFW_LABELS.items() if p.value == policy), policy or "—")


def audit_text(entries: Sequence[AuditEntry]) -> str:
    """/easel-admin audit's message: settings changes, and what moderators did to jobs here
    (withdrawals, restores), the one log of admin-side changes a server has. Every row whole
    while they fit one message; else each long row is cut to its share (``_fair_shares``), so
    that a long row never hides the others."""
    title = "**Latest Easel settings changes, withdrawals and restores**"
    rows = [_audit_row(entry) for entry in entries]
    shares = _fair_shares([len(row) for row in rows], MESSAGE_LIMIT - len(title) - len(rows))
    return "\n".join(
        [
            title,
            *(
                row if len(row) <= share else _audit_row_within(entry, share)
                for entry, row, share in zip(entries, rows, shares, strict=True)
            ),
        ]
    )


def _fair_shares(lengths: Sequence[int], room: int) -> list[int]:
    """``room`` characters shared between texts of ``lengths``: the shortest first, each
    its length or an equal share of what the shorter ones left, whichever is less (all
    their lengths when they fit)."""
    shares = list(lengths)
    left, waiting = room, len(lengths)
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        shares[index] = min(lengths[index], left // waiting)
        left, waiting = left - shares[index], waiting - 1
    return shares


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
        await interaction.response.send_message(
            message, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

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
        emptied = action == "remove" and not (await self._policy.settings(guild_id)).entries(which)
        if when_empty is not None and emptied:
            said += f" The list is now empty: {when_empty}."
        await self._done(interaction, said)

    @admin.command(name="show", description="Every Easel setting of this server")
    async def show(self, interaction: discord.Interaction[Any]) -> None:
        settings = await self._policy.settings(_guild_id(interaction))
        operator_words = self._policy.operator_banned_word_count
        in_use = self._policy.default_model(settings)
        missing = _missing_audit_log(interaction)
        whole = describe_guild(settings, None, operator_words, in_use) + missing
        if len(whole) <= MESSAGE_LIMIT:
            await self._done(interaction, whole)
            return
        await interaction.response.send_message(
            describe_guild_within(MESSAGE_LIMIT, settings, operator_words, in_use, missing),
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
        channel: app_commands.AppCommandChannel,
    ) -> None:
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

    @admin.command(name="priority-role", description="Members with this role jump the queue")
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
        images_per_day="Pictures a day (empty: unlimited)",
        images_per_week="Pictures a week (empty: unlimited)",
        images_per_month="Pictures a month (empty: unlimited)",
        gpu_seconds_per_day="GPU seconds a day (empty: unlimited)",
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
        await self._policy.set_quota(guild_id, interaction.user.id, limited, subject_id, limits)
        await self._done(interaction, f"Quota for {subject}: {_limits_text(limits.as_mapping())}.")

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
            await self._done(interaction, f"Server preset `{name}` deleted.")
        else:
            await self._done(interaction, f"This server has no preset named `{name}`.")

    @admin.command(
        name="restore", description="Show and use again a job a moderator removed or Easel withheld"
    )
    @app_commands.describe(job="The job id (in its result's caption)")
    async def restore(
        self, interaction: discord.Interaction[Any], job: app_commands.Range[str, 1, 32]
    ) -> None:
        job_id = job.strip().lower()
        history = services_of(interaction).history
        with_it = await history.restore(_guild_id(interaction), job_id, interaction.user.id)
        also = (
            f" So may those of the {counted(len(with_it), 'job')} withdrawn with it (made from "
            f"it, or with its pixels): {listed_ids(with_it)}."
            if with_it
            else ""
        )
        await self._done(
            interaction,
            f"Restored job `{job_id}`: its pictures may be shown and used again (`/show` by its "
            f"maker posts them; the deleted messages stay deleted).{also} A job withdrawn at "
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


class DiscordServerAdmins:
    """Who manages a server and which of its channels they may read, asked of Discord when
    an admin signs in to the dashboard and while their session lasts (``Dashboard``)."""

    def __init__(self, client: discord.Client, thread_members: RecentThreadMembers) -> None:
        self._client = client
        self._thread_members = thread_members

    def name_of(self, guild_id: int) -> str:
        guild = self._client.get_guild(guild_id)
        return guild.name if guild is not None else str(guild_id)

    async def rights(
        self, guild_id: int, user_id: int, channel_ids: Collection[int]
    ) -> AdminRights:
        # The member's current roles (one call: Manage Server or Administrator, else refused;
        # a kick or a ban is "no longer a member"), the channels' overwrites from the cache,
        # and one call per private thread they do not manage (cogs.visibility's rules). A
        # channel not in the cache (deleted, an archived thread) is one they cannot read; so
        # is a private thread while Discord does not answer about it.
        guild = self._client.get_guild(guild_id)
        if guild is None:
            return AdminRights("Easel is no longer in that server.")
        try:
            member = await guild.fetch_member(user_id)  # current roles, not a cached copy
        except discord.NotFound:
            return AdminRights("You are no longer a member of that server.")
        except DISCORD_FAILED:
            return AdminRights("Discord did not answer; reload this page in a minute.")
        permissions = member.guild_permissions
        if not (permissions.manage_guild or permissions.administrator):
            return AdminRights("You no longer have the Manage Server permission there.")
        channels = [
            channel
            for channel in map(guild.get_channel_or_thread, channel_ids)
            if channel is not None
        ]
        try:
            readable = await asyncio.gather(*(self._may_read(c, member) for c in channels))
        except DISCORD_FAILED:
            readable = [False] * len(channels)
        return AdminRights(
            None,
            frozenset(channel.id for channel, may in zip(channels, readable, strict=True) if may),
            frozenset(channel.id for channel in channels if is_age_restricted(channel)),
        )

    async def _may_read(
        self, channel: discord.abc.GuildChannel | discord.Thread, member: discord.Member
    ) -> bool:
        try:
            return await member_may_read(channel, member, self._thread_members)
        except ThreadMembershipUnknown:
            return False

"""What admins set per guild, and the check every request passes before it is queued."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import aiosqlite

from bot.jobs import accounting
from bot.memo import Memo
from bot.policy.addons import (
    ADDON_LISTS,
    ANY_ADDON,
    AddonKind,
    AddonRules,
    allowed_addons_only,
    kinds_to_read,
    under_addon_rules,
)
from bot.policy.moderation import (
    BANNED_SINCE,
    BANNED_WORDS_PER_SERVER,
    WITHDRAWN_PICTURE,
    WITHHELD_IN_DIRECT_MESSAGES,
    WITHHELD_PICTURE,
    BannedWords,
    ConditioningTexts,
    NsfwPolicy,
    banned_word_too_long,
    check_channel,
    check_request,
    default_model_here,
    model_left_out,
    models_rendered,
)
from bot.policy.prompt_safety import STILL_PLANNING, PromptPlanner, renders_prompt
from bot.policy.quota import QuotaLimits
from bot.user_errors import Reason, UserError
from db import guild_settings as store
from db import jobs as journal
from db import quotas as quota_store
from db.guild_settings import AuditEntry, GuildList, GuildSettings
from db.quotas import Limits, LimitScope, StoredOverride
from inference.compare import is_comparison
from inference.face_options import FaceOptions
from inference.names import as_typed
from inference.types import RenderRequest

__all__ = [
    "Admission",
    "AuditEntry",
    "GuildList",
    "GuildPolicy",
    "GuildSettings",
    "LimitScope",
    "NsfwPolicy",
    "StoredOverride",
]


# Servers whose settings are kept in memory, those read last; another's are read again (two
# queries, a few ms). Measured (tracemalloc): 2 KiB a server with a few channels and words,
# 96 KiB one with the 1,000 banned words it may hold (``BANNED_WORDS_PER_SERVER``): 2 MiB
# kept in all, 94 MiB at most, in however many servers Easel is.
SERVER_SETTINGS_KEPT = 1_000
# Reuse verdicts kept, of the jobs last asked about (a key and a bool each: a few MB at most).
REUSE_VERDICTS_KEPT = 10_000
# Picks kept, of the jobs naming no model that started last (a job id and a model name each):
# more than render and wait for their delivery at once; one let go is judged by now's pick.
PICKS_KEPT = 1_000
DMS_OFF = "Easel works only in servers: use it in a server channel, not in direct messages."
# Direct messages (when allowed) get the rules a guild has before its admins set any.
_DIRECT_MESSAGES = GuildSettings(
    guild_id=0, default_model=None, nsfw_policy=store.DEFAULT_NSFW_POLICY, lists={}
)
# The lists whose entries name files (compared ``as_typed``).
_NAME_LISTS = frozenset({GuildList.ALLOWED_MODEL, *ADDON_LISTS.values()})
_ADDON_KINDS: Mapping[GuildList, AddonKind] = {which: kind for kind, which in ADDON_LISTS.items()}


@dataclass
class _Turns:
    """One member's stored checks, one at a time: the lock and how many hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(frozen=True)
class Admission:
    request: RenderRequest
    priority: bool  # the member holds one of the guild's priority roles
    nsfw_policy: NsfwPolicy
    # The installed files of the kinds admission read (``AddonRules.installed``), so that
    # ``check_addons_installed`` walks no folder twice.
    installed: Mapping[AddonKind, Collection[str]] = field(default_factory=dict)
    # The server's allowed models as admission read them (empty: every model), for the
    # checks that follow it (``check_family_takes``) to read no list again.
    allowed_models: Collection[str] = ()


class GuildPolicy:
    """Read on every request before it is acknowledged, so a guild's settings are kept in
    memory after the first read; every change goes through here and drops them."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        clock: Callable[[], float] = time.time,
        *,
        allow_dms: bool = False,
        prompts: PromptPlanner,
        operator_banned_words: frozenset[str] = frozenset(),
        operator_default_model: str | None = None,
        operator_default_upscaler: str | None = None,
        operator_hires_upscaler: str | None = None,
        installed_models: Callable[[], Collection[str]] | None = None,
        kept_models: Callable[[], Collection[str] | None] | None = None,
        installed_addons: Callable[[AddonKind], Collection[str]] | None = None,
    ) -> None:
        self._conn = conn
        self._operator_default_model = operator_default_model  # EASEL_DEFAULT_MODEL
        self._operator_default_upscaler = operator_default_upscaler  # EASEL_DEFAULT_UPSCALER
        self._operator_hires_upscaler = operator_hires_upscaler  # EASEL_HIRES_UPSCALER
        # The models installed (blocking: a walk), read to refuse one the list leaves out,
        # naming only the listed models that are installed (None: the list as it is).
        self._installed_models = installed_models
        # Those models as last listed, from memory while that listing holds (None: list them
        # again): a command's default is picked with no thread hop before its acknowledgement.
        self._kept_models = kept_models
        # The add-on files of a kind installed (blocking: a walk), read where the server lists
        # that kind, so a refusal or a default upscaler names none since removed.
        self._installed_addons = installed_addons
        # EASEL_BANNED_WORDS_FILE: refused everywhere, direct messages included, whatever a
        # server's admins set (they add words; they cannot lift these).
        self._operator_banned_words = operator_banned_words
        self._prompts = prompts
        self._clock = clock
        self._allow_dms = allow_dms  # EASEL_ALLOW_DMS
        self._cached: Memo[int, GuildSettings] = Memo(SERVER_SETTINGS_KEPT)
        # Whether a stored job's texts (which never change) render none of its server's banned
        # words, by (server, job, its prompts left to the admission): kept until the server's
        # banned words change, for the jobs last asked about.
        self._reuse_verdicts: Memo[tuple[int, str, bool], bool] = Memo(REUSE_VERDICTS_KEPT)
        # Each member's stored checks take turns (the read itself is no member's): one member's
        # clicks on many costly jobs hold one prompt reader at a time, not all of them.
        self._stored_turns: dict[int, _Turns] = {}
        # The engine's pick each job naming no model started with (``unnamed_model``).
        self._picks_at_start: Memo[str, str] = Memo(PICKS_KEPT)

    async def settings(self, guild_id: int) -> GuildSettings:
        return await self._cached.get(guild_id, lambda: self._stored_settings(guild_id))

    async def _stored_settings(self, guild_id: int) -> GuildSettings:
        """The stored settings, each model and add-on name in them ``as_typed``: one saved in
        NFD (as autocomplete offered a macOS file's name before names were compared in NFC)
        matches the file, and reads as its name."""
        stored = await store.get(self._conn, guild_id)
        return dataclasses.replace(
            stored,
            default_model=None if stored.default_model is None else as_typed(stored.default_model),
            lists={
                which: frozenset(map(as_typed, entries)) if which in _NAME_LISTS else entries
                for which, entries in stored.lists.items()
            },
        )

    async def admit(
        self,
        guild_id: int | None,
        channel_id: int | None,
        channel_is_age_restricted: bool,
        request: RenderRequest,
        role_ids: Collection[int] = (),
        member_id: int | None = None,
        *,
        parent_id: int | None = None,
    ) -> Admission:
        """The request as the guild wants it run (its default model filled in), or
        ``UserError`` naming the rule it breaks. Direct messages, which no guild governs, are
        refused unless the operator allows them; then a new guild's rules apply there.
        ``member_id``: whose command it is (one prompt of theirs read at a time);
        ``parent_id``: the channel of the thread it is asked in (``check_channel``)."""
        settings = await self._rules_where(guild_id)
        if request.model is None:
            model = self.default_model(settings, await self.installed_now())
            request = dataclasses.replace(request, model=model)
        request = _models_as_typed(request)
        nsfw_policy = NsfwPolicy(settings.nsfw_policy)
        allowed_models = settings.entries(GuildList.ALLOWED_MODEL)
        refiner = request.options.get("refiner")
        check_request(
            model=request.model,
            channel_id=channel_id,
            channel_is_age_restricted=channel_is_age_restricted,
            allowed_channels=_allowed_channels(settings),
            allowed_models=allowed_models,
            nsfw_policy=nsfw_policy,
            refiner=refiner,
            usable_models=await self._usable_models(request.model, refiner, allowed_models),
            parent_id=parent_id,
        )
        addons = self._addon_rules(settings)
        read = await self._with_installed(addons, request)
        request = under_addon_rules(request, read)
        # The prompt as the model will read it, banned words and LoRA tags included: planned
        # now, so a bad one fails alone.
        banned_words = self._banned_words(settings)
        request = await self._prompts.check(
            request, banned_words, member_id, guild_id=guild_id, addons=addons
        )
        priority_roles = {int(r) for r in settings.entries(GuildList.PRIORITY_ROLE)}
        priority = bool(priority_roles & set(role_ids))
        return Admission(request, priority, nsfw_policy, read.installed, allowed_models)

    async def check_reuse(
        self,
        guild_id: int | None,
        job_id: str,
        texts: ConditioningTexts,
        *,
        withdrawn: bool,
        withheld: bool = False,
        prompts_planned: bool = False,
        member_id: int | None = None,
    ) -> None:
        """``UserError`` unless a stored picture of job ``job_id`` of ``guild_id`` may be shown
        again or made into a new job now: every path that posts or reuses one asks this. A
        moderator has not deleted its result (``withdrawn``), and what it was conditioned on
        (``texts``) renders none of the server's banned words of now (read once per job until
        those words change); neither sentence names a word. ``prompts_planned``: ``texts``
        leaves out the job's prompt and negative prompt, which the caller's admission plans
        (a verdict kept apart from the whole one). The read is shared by whoever asks about
        the job meanwhile, so it is no member's (a refusal of one member's, like
        ``STILL_PLANNING``, would reach the others); ``member_id`` (who asks) waits for their
        previous stored check to end first, within the check's budget."""
        if withdrawn:  # ``withheld``: by Easel at delivery, not by a moderator
            if not withheld:
                raise UserError(WITHDRAWN_PICTURE, Reason.PERMISSION)
            in_dms = guild_id is None  # the operator's rules: no server admin restores it
            raise UserError(
                WITHHELD_IN_DIRECT_MESSAGES if in_dms else WITHHELD_PICTURE, Reason.PERMISSION
            )
        if not texts or not await self.banned_words_where(guild_id):
            return  # nothing to read, nor to keep
        # Direct messages are kept under 0, which no server's id is.
        key = (guild_id or 0, job_id, prompts_planned)
        clean = self._reuse_verdicts.kept(key)  # a kept verdict waits for no turn
        if clean is None:
            clean = await self._verdict_in_turn(
                member_id,
                lambda: self._reuse_verdicts.get(
                    key, lambda: self._renders_no_banned_word(guild_id, texts)
                ),
            )
        if not clean:
            raise UserError(BANNED_SINCE, Reason.BANNED_WORD)

    async def _verdict_in_turn(
        self, member_id: int | None, read: Callable[[], Awaitable[bool]]
    ) -> bool:
        """``read()`` in ``member_id``'s turn (None: counted against no one). Waiting for the
        turn and the read share one budget, so a click is answered within it (before
        Discord's 3 s): past it ``STILL_PLANNING``, the read going on (shielded) for whoever
        asks next. A read with no turn to wait for answers within its own (the same) budget,
        in its own words."""
        if member_id is None:
            return await read()
        turns = self._stored_turns.setdefault(member_id, _Turns())
        turns.users += 1
        try:
            if turns.users == 1:  # nobody holds or waits for the turn
                async with turns.lock:
                    return await read()
            try:
                async with asyncio.timeout(self._prompts.stored_budget_s):
                    async with turns.lock:
                        return await read()
            except TimeoutError:
                raise UserError(STILL_PLANNING, Reason.BUSY) from None
        finally:
            turns.users -= 1
            if not turns.users:
                del self._stored_turns[member_id]

    async def _renders_no_banned_word(self, guild_id: int | None, texts: ConditioningTexts) -> bool:
        banned_words = await self.banned_words_where(guild_id)
        if not banned_words:
            return True
        try:
            await self._prompts.check_stored(texts, banned_words, guild_id=guild_id)
        except UserError as refused:
            if refused.reason is not Reason.BANNED_WORD:
                raise  # not checked (too long, readers busy): asked again next time
            return False
        return True

    def default_model(
        self, settings: GuildSettings, installed: Collection[str] | None = None
    ) -> str | None:
        """The model a request that names none renders with under ``settings``, passing over
        a default no longer ``installed`` (``installed_now``; None: not known)."""
        return default_model_here(
            settings.default_model,
            self._operator_default_model,
            settings.entries(GuildList.ALLOWED_MODEL),
            installed,
        )

    async def default_model_where(self, guild_id: int | None) -> str | None:
        """``default_model`` of ``guild_id`` (None: direct messages, the operator's)."""
        if guild_id is None:
            return self._operator_default_model
        return self.default_model(await self.settings(guild_id), await self.installed_now())

    async def installed_now(self) -> Collection[str] | None:
        """The models installed (the folders hold them, whole or not: one still being copied
        is refused as such, not passed over): as last listed while that listing holds
        (``kept_models``), else listed on a thread; None: no listing."""
        if self._installed_models is None:
            return None
        kept = None if self._kept_models is None else self._kept_models()
        return kept if kept is not None else await asyncio.to_thread(self._installed_models)

    async def unnamed_model(self, job_id: str, *, starting: bool) -> str | None:
        """The model the engine here renders job ``job_id``, which names none, with, listed on
        a thread (``PromptPlanner.unnamed_model``; None: not known here, a broker's workers
        each take their own, or none is installed). Asked at its start (``starting``): the
        pick of now, kept. Asked after: the pick it started with, while kept, not the pick of
        now (a model installed since that sorts first did not render it); else now's."""
        if not starting and (kept := self._picks_at_start.kept(job_id)) is not None:
            return kept
        unnamed = self._prompts.unnamed_model
        pick = None if unnamed is None else await asyncio.to_thread(unnamed)
        if starting and pick is not None:
            self._picks_at_start.put(job_id, pick)
        elif starting:
            self._picks_at_start.drop(job_id)
        return pick

    async def addon_rules(self, guild_id: int | None) -> AddonRules:
        """The add-on lists of ``guild_id`` (None: direct messages, the operator's: none)."""
        if guild_id is None:
            return ANY_ADDON
        return self._addon_rules(await self.settings(guild_id))

    def _addon_rules(self, settings: GuildSettings) -> AddonRules:
        return AddonRules.of(
            settings, self._operator_default_upscaler, self._operator_hires_upscaler
        )

    async def _with_installed(self, rules: AddonRules, request: RenderRequest) -> AddonRules:
        """``rules`` with the installed files of the kinds ``request`` needs read (on a thread)."""
        kinds = kinds_to_read(request, rules)
        read = self._installed_addons
        if read is None or not kinds:
            return rules
        installed = await asyncio.to_thread(lambda: {kind: read(kind) for kind in kinds})
        return dataclasses.replace(rules, installed=installed)

    async def _usable_models(
        self, model: str | None, refiner: str | None, allowed_models: Collection[str]
    ) -> list[str] | None:
        """What a refusal of ``model`` or ``refiner`` names where the list leaves one out: the
        listed models installed (``installed_now``; None: neither is left out, or no
        listing)."""
        if model_left_out((model, refiner), allowed_models) is None:
            return None
        installed = await self.installed_now()
        return None if installed is None else [n for n in installed if n in allowed_models]

    def _banned_words(self, settings: GuildSettings) -> BannedWords:
        """The server's words (one set until its list changes, whose matcher the reader keeps)
        beside the operator's, never joined (``BannedWords``)."""
        return BannedWords(settings.entries(GuildList.BANNED_WORD), self._operator_banned_words)

    async def banned_words_where(self, guild_id: int | None) -> BannedWords:
        """The words refused in ``guild_id`` (None: direct messages, the operator's only)."""
        if guild_id is None:
            return BannedWords(operator=self._operator_banned_words)
        return self._banned_words(await self.settings(guild_id))

    @property
    def operator_banned_word_count(self) -> int:
        return len(self._operator_banned_words)

    async def check_channel(
        self, guild_id: int | None, channel_id: int | None, parent_id: int | None = None
    ) -> None:
        """``UserError`` when Easel may not work here: direct messages while they are off, or
        a channel the server has not enabled (for work that is not a job, e.g. /describe); a
        thread (``parent_id``: its channel) is enabled with its channel."""
        settings = await self._rules_where(guild_id)
        check_channel(channel_id, _allowed_channels(settings), parent_id)

    async def _rules_where(self, guild_id: int | None) -> GuildSettings:
        """The rules of ``guild_id``; in direct messages, which no guild governs, a new
        guild's, or ``UserError`` while the operator keeps them off."""
        if guild_id is not None:
            return await self.settings(guild_id)
        if not self._allow_dms:
            # Also for a button or a stale command registration that Discord still delivers.
            raise UserError(DMS_OFF)
        return _DIRECT_MESSAGES

    async def set_default_model(self, guild_id: int, admin_id: int, model: str | None) -> None:
        await store.set_value(self._conn, guild_id, admin_id, "default_model", model, self._clock())
        self._cached.drop(guild_id)

    async def set_nsfw_policy(self, guild_id: int, admin_id: int, policy: NsfwPolicy) -> None:
        await store.set_value(
            self._conn, guild_id, admin_id, "nsfw_policy", policy.value, self._clock()
        )
        self._cached.drop(guild_id)

    async def change_list(
        self, guild_id: int, admin_id: int, which: GuildList, value: str, *, add: bool
    ) -> bool:
        """Add or remove ``value``; False: nothing changed. A banned word added is at most
        ``BANNED_WORD_MAX_LENGTH`` long as matched, and a server bans at most
        ``BANNED_WORDS_PER_SERVER`` (``UserError`` naming the limit; a removal always goes)."""
        banned_word = which is GuildList.BANNED_WORD
        value = value.strip().lower() if banned_word else value.strip()
        if banned_word and add and (too_long := banned_word_too_long(value)) is not None:
            raise UserError(f"This word or phrase {too_long}.")
        if which in _NAME_LISTS:
            value = as_typed(value)
            if not add:  # the entry as stored, which may spell the name in NFD
                stored = (await store.get(self._conn, guild_id)).entries(which)
                value = next((entry for entry in stored if as_typed(entry) == value), value)
        try:
            changed = await store.change_list(
                self._conn,
                guild_id,
                admin_id,
                which,
                value,
                add=add,
                now=self._clock(),
                at_most=BANNED_WORDS_PER_SERVER if banned_word else None,
            )
        except store.ListFull:
            raise UserError(
                f"This server bans {BANNED_WORDS_PER_SERVER:,} words or phrases already, the "
                "most it may; remove one (/easel-admin banned-word action:remove) to add another."
            ) from None
        self._cached.drop(guild_id)
        if which is GuildList.BANNED_WORD:
            self._reuse_verdicts.drop_where(lambda key: key[0] == guild_id)
        return changed

    async def set_quota(
        self,
        guild_id: int,
        admin_id: int,
        scope: LimitScope,
        subject_id: int,
        limits: QuotaLimits | None,
    ) -> bool:
        """Store an override, or with ``limits`` None remove it; whether anything changed."""
        return await accounting.set_limits(
            self._conn, scope, guild_id, subject_id, limits, self._clock(), by=admin_id
        )

    async def unfinished_left_out(self, guild_id: int, which: GuildList) -> int:
        """How many of the server's jobs queued or rendering its list ``which`` of now leaves
        out (an allowed-channels, -models or add-on list, read alone as the start and delivery
        gates read it: ``bot.policy.delivery.placed_under_rules_of_now``), which those gates
        end unposted and refunded. A thread's job journaled before 0041, its channel unknown,
        is counted; a job naming no model is read with the engine's pick (``unnamed_model``:
        kept since its start, else now's)."""
        settings = await self.settings(guild_id)
        if which is GuildList.ALLOWED_CHANNEL:
            channels = _allowed_channels(settings)
            return (
                await journal.unfinished_outside(self._conn, guild_id, channels) if channels else 0
            )
        entries = settings.entries(which)
        if not entries:
            return 0
        rows = await journal.unfinished_requests_in(self._conn, guild_id)
        count: Callable[[], int]
        if which is GuildList.ALLOWED_MODEL:
            picks = self._picks_at_start
            kept = {job_id: pick for job_id, _ in rows if (pick := picks.kept(job_id)) is not None}
            unnamed = self._prompts.unnamed_model
            count = functools.partial(_models_left_out, rows, entries, kept, unnamed)
        else:
            alone = {_ADDON_KINDS[which]: frozenset(entries)}
            rules = dataclasses.replace(self._addon_rules(settings), allowed=alone)
            count = functools.partial(_addons_left_out, rows, rules)
        # On a thread, in one hop: thousands of requests read and judged take seconds.
        return await asyncio.to_thread(count)

    async def models_before_render(
        self, job_id: str, request: RenderRequest, *, starting: bool
    ) -> list[str | None]:
        """Every model job ``job_id`` renders ``request`` with (``models_rendered``), and where
        it names none (``engine_picks_model``) the engine's pick here (``unnamed_model``, kept
        where ``starting``)."""
        models = models_rendered(request)
        if engine_picks_model(request):  # asked only then: a pick at a start is kept
            models.append(await self.unnamed_model(job_id, starting=starting))
        return models

    async def quota_overrides(self, guild_id: int) -> list[StoredOverride]:
        """The server's limit overrides: its default first, then roles', then members'."""
        return await quota_store.overrides_in(self._conn, guild_id)

    async def server_quota(self, guild_id: int) -> Limits | None:
        """The server's own default limits, its override of Easel's (None: it set none)."""
        return await quota_store.get_limits(self._conn, LimitScope.GUILD, guild_id, guild_id)

    async def audit_log(self, guild_id: int, limit: int = 15) -> list[AuditEntry]:
        return await store.audit_log(self._conn, guild_id, limit)


def _models_as_typed(request: RenderRequest) -> RenderRequest:
    """The request with its model and refiner ``as_typed``, as the registry names them: a
    stored job (which Reroll, Vary and Upscale reuse) or a default may spell one in NFD."""
    refiner = request.options.get("refiner")
    options = request.options
    if isinstance(refiner, str):
        options = {**options, "refiner": as_typed(refiner)}
    model = None if request.model is None else as_typed(request.model)
    return dataclasses.replace(request, model=model, options=options)


def engine_picks_model(request: RenderRequest) -> bool:
    """Whether the engine picks the checkpoint ``request`` renders with: it names none (nor
    is a /compare, whose cells name theirs) and renders with one: all but a fast upscale and
    a faces pass that only restores (no fix)."""
    if request.model is not None or is_comparison(request):
        return False
    if request.mode == "faces":
        return FaceOptions.from_options(request.options).fix
    return renders_prompt(request)


def _models_left_out(
    rows: list[tuple[str, str]],
    allowed_models: Collection[str],
    kept: Mapping[str, str],
    unnamed: Callable[[], str | None] | None,
) -> int:
    """How many of ``rows`` (a job and its request) render with a model ``allowed_models``
    leaves out (``models_before_render``, on a thread): one naming none with its pick
    ``kept`` since its start, else the engine's pick of now, asked once."""
    pick_now = functools.cache(unnamed or (lambda: None))
    left_out = 0
    for job_id, stored in rows:
        request = RenderRequest.from_json(stored)
        models = models_rendered(request)
        if engine_picks_model(request):
            models.append(kept.get(job_id) or pick_now())
        left_out += model_left_out(models, allowed_models) is not None
    return left_out


def _addons_left_out(rows: list[tuple[str, str]], rules: AddonRules) -> int:
    """How many of ``rows`` (a job and its request) ``rules`` leaves out (on a thread)."""
    requests = (RenderRequest.from_json(stored) for _, stored in rows)
    return sum(not _within_addon_rules(request, rules) for request in requests)


def _within_addon_rules(request: RenderRequest, rules: AddonRules) -> bool:
    """Whether a job admitted earlier still meets ``rules`` (``allowed_addons_only``)."""
    try:
        allowed_addons_only(request, rules)
    except UserError:
        return False
    return True


def _allowed_channels(settings: GuildSettings) -> set[int]:
    return {int(channel) for channel in settings.entries(GuildList.ALLOWED_CHANNEL)}

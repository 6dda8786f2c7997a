"""What the cogs may use besides the queue; built once by ``bot.app.EaselBot.setup_hook``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from bot.bans import StoppedMembers
from bot.forget_me_log import ForgetMeLog
from bot.history import History
from bot.jobs.accounting import UNKNOWN_MODEL_SIDE
from bot.jobs.queue import JobCopies
from bot.picture_work import PictureWork
from bot.policy.addons import installed_addons
from bot.policy.guild import GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota_status import QuotaStatus
from bot.policy.styles import Style, load_styles
from bot.policy.visibility import RecentThreadMembers
from bot.presets import Presets
from bot.refusals import RefusalLog
from bot.requests import Defaults
from bot.settings import Settings
from bot.unheard_deletions import UnheardDeletions
from inference.family_rules import flow_label
from inference.flow_detect import FAMILY_DEFAULTS
from inference.memory import native_side, native_side_sources
from inference.metadata import (
    FAMILY_NAMES,
    UNKNOWN,
    tensor_family,
)
from inference.model_list import installed_models, models_without_embeddings
from inference.registry import (
    SCAN_MAX_AGE_NS,
    ModelRegistry,
    Stamps,
    entry_weights,
)
from inference.types import RenderInputError
from inference.validation import RenderLimits

log = logging.getLogger(__name__)


def model_defaults(
    registry: ModelRegistry,
    name: str | None,
    default_model: str | None,
    fallback: Defaults,
    max_steps: int,
) -> Defaults:
    """The request defaults for model ``name`` (None: ``default_model``, else the first
    installed): its family's steps, CFG and sampler where it has them (Flux schnell's 4
    steps), at most ``max_steps``; else ``fallback``. An unknown name gets ``fallback``
    too, and is refused later in its own words. Every caller that builds requests (slash
    commands, /describe's buttons, ``easel render``) goes through this."""
    try:
        entry = registry.resolve(name, default_model)
    except RenderInputError:
        return fallback
    # Its family as the engine loads it: a merge's stale metadata may name SD 3 or Flux.
    family = FAMILY_DEFAULTS.get(tensor_family(entry))
    if family is None:
        return fallback
    return Defaults(steps=min(family.steps, max_steps), cfg=family.cfg, sampler=family.sampler)


def model_rendered_unnamed(registry: ModelRegistry, operators_default: str | None) -> str | None:
    """The model the engine here renders a request naming none with: the operator's default,
    else the first installed by name (``ModelRegistry.resolve``; None: none installed)."""
    return operators_default or next(iter(registry.names()), None)


@dataclass
class ListedModels:
    """The last listing of the installed models: the checkpoint folders' trees as stamped
    before it (``ModelRegistry.checkpoint_stamps``: adding or removing a model, a file or a
    diffusers folder, in any of their subfolders, changes its directory's time; None: never
    listed) and the names; replaced whole, so a reader never sees half of one."""

    latest: tuple[Stamps | None, frozenset[str]] = (None, frozenset())


@dataclass
class KeptSide:
    """A model's native side, the stamps of what it rests on, and when (``NativeSides.clock``)
    those were last found unchanged."""

    side: int
    stamps: Stamps
    checked_at_ns: int
    # A checkpoint left out (still being copied, cut short) would take the name once whole
    # (``ModelRegistry.awaited``), which none of the stamps may show (its copy ends in place):
    # the name is looked up again once the window is over. So is it when a checkpoint folder
    # changed too lately to tell a later change (``Stamps.settled``).
    contested: bool


@dataclass
class NativeSides:
    """Each model's native side as last read (``Services.native_sides_of``), by the name asked
    for (None: the first installed), with the stamps of the paths whose change makes it read
    again, taken before the read: what it was read from, plus where the name could come to
    mean another model (``Services.read_native_side``)."""

    read: dict[str | None, KeptSide] = field(default_factory=dict)
    # Nanoseconds, how long ago a kept side's paths were last found unchanged.
    clock: Callable[[], int] = time.monotonic_ns

    def keep(
        self,
        model: str | None,
        read_from: Stamps,
        folders: Stamps,
        side: int,
        checked_at_ns: int,
        *,
        awaited: bool,
    ) -> None:
        """Keep ``side`` unless a path it was ``read_from`` changed within
        ``LISTING_SETTLED_NS`` of its stamp (``Stamps.settled``): such a side is read again at
        the next ask. ``folders``: the checkpoint folders, where a checkpoint added takes the
        name; kept even when one changed lately (each folder written to would else make every
        ask read), but then, as when a checkpoint is ``awaited``, looked up again each window."""
        if read_from.settled():
            contested = awaited or not folders.settled()
            self.read[model] = KeptSide(side, read_from.joined(folders), checked_at_ns, contested)
        else:
            self.read.pop(model, None)

    def kept(self, model: str | None) -> int | None:
        """``model``'s side, if read since its paths last changed; else None. Taken without a
        ``stat`` for ``SCAN_MAX_AGE_NS`` (the oldest scan the registry answers from) after
        its paths were last found unchanged: a burst of commands, each asking before its
        acknowledgement, stats them about once a second, not per command; a change shows
        within that time (the side only prices a request that names no size). A contested
        side is read again after that time, by its first asker only: the others meanwhile
        get it as kept, for another window."""
        known = self.read.get(model)
        if known is None:
            return None
        now = self.clock()
        if not 0 <= now - known.checked_at_ns < SCAN_MAX_AGE_NS:
            if known.contested:
                known.checked_at_ns = now
                return None
            if not known.stamps.unchanged():
                return None
            known.checked_at_ns = now
        return known.side


@dataclass(frozen=True)
class Services:
    history: History
    member_settings: MemberSettings
    presets: Presets  # named /imagine presets, a member's and a server's
    guild_policy: GuildPolicy
    quota_status: QuotaStatus
    prompts: PromptPlanner  # the prompt language's CPU work, off the event loop
    # Uploaded pictures (/vary, /inpaint, /upscale), saved as PNG for the engine to read.
    inputs_dir: Path
    # Folder scans only (no torch): what the autocomplete lists and requests are checked against.
    registry: ModelRegistry
    styles_path: Path
    # Checked before a job is accepted; the engine checks again once sizes are known.
    limits: RenderLimits
    hires_upscaler: str  # what /imagine's hires fix enlarges with
    refusals: RefusalLog  # what members were refused, for their server's dashboard
    # Whom Discord said is in a private thread, trusted for 30 s (a removal takes that long to
    # count; an addition counts at once): this bot's own, so another bot or a restart starts clean.
    thread_members: RecentThreadMembers = field(
        default_factory=lambda: RecentThreadMembers(ttl_s=30.0)
    )
    # Members banned or kicked from a server within the hour, or timed out there until the
    # timeout ends: what they started before the stop queues and posts nothing more.
    stopped_members: StoppedMembers = field(default_factory=StoppedMembers)
    # The installed models' names as last listed, with the checkpoint folders' stamps then.
    listed_models: ListedModels = field(default_factory=ListedModels)
    native_sides: NativeSides = field(default_factory=NativeSides)
    # Which posts a deletion of may have gone unheard (this bot's gateway sessions): the only
    # ones asked of Discord before their pictures are used again.
    unheard_deletions: UnheardDeletions = field(default_factory=UnheardDeletions)
    # Members' uploads read and pictures fitted again on threads of their own, each member's
    # in line (not on asyncio's default pool, where every command's hop before its
    # acknowledgement waits).
    picture_work: PictureWork = field(default_factory=PictureWork)

    @classmethod
    def build(
        cls,
        conn: aiosqlite.Connection,
        settings: Settings,
        copies: JobCopies | None = None,
        max_job_bytes: Callable[[], int] | None = None,
    ) -> Services:
        """``copies``: the broker's copies of jobs, when renders run on one (/forget-me);
        ``max_job_bytes``: the largest job it carries (``BrokerClient.max_job_bytes``)."""
        member_settings = MemberSettings(conn)
        registry = ModelRegistry(
            settings.models_dir,
            allow_pickle=settings.allow_pickle,
            hashes_file=settings.model_hashes_file,
        )
        prompts = PromptPlanner(
            settings.wildcards_dir,
            installed_embeddings=functools.partial(registry.network_files, "embedding"),
            installed_loras=functools.partial(registry.network_files, "lora"),
            max_job_bytes=max_job_bytes,
            models_without_embeddings=functools.partial(models_without_embeddings, registry),
            flow_label=functools.partial(flow_label, registry),
            # A broker's workers each take their own first model: not known here.
            unnamed_model=(
                functools.partial(model_rendered_unnamed, registry, settings.default_model)
                if max_job_bytes is None
                else None
            ),
        )
        return cls(
            History(
                conn,
                settings.images_dir,
                settings.inputs_dir,
                member_settings,
                copies=copies,
                forget_me_log=ForgetMeLog(settings.data_dir),
            ),
            member_settings,
            Presets(conn),
            GuildPolicy(
                conn,
                allow_dms=settings.allow_dms,
                prompts=prompts,
                operator_banned_words=settings.operator_banned_words,
                operator_default_model=settings.default_model,
                operator_default_upscaler=settings.default_upscaler,
                operator_hires_upscaler=settings.hires_upscaler,
                installed_models=registry.held_names,
                kept_models=registry.kept_held_names,
                installed_addons=functools.partial(installed_addons, registry),
            ),
            QuotaStatus(conn, settings.dm_limits),
            prompts,
            settings.inputs_dir,
            registry,
            settings.data_dir / "styles.csv",
            settings.render_limits,
            settings.hires_upscaler,
            RefusalLog(conn, member_settings),
        )

    @property
    def request_defaults(self) -> Defaults:
        """What a request that names no steps gets: the usual default, or this server's
        ceiling when that is lower (so a plain /imagine is never refused for its steps)."""
        return Defaults(steps=min(Defaults.steps, self.limits.max_steps))

    def model_defaults(self, name: str | None, default_model: str | None) -> Defaults:
        """:func:`model_defaults` under this server's step ceiling, falling back to
        :attr:`request_defaults`."""
        return model_defaults(
            self.registry, name, default_model, self.request_defaults, self.limits.max_steps
        )

    async def native_sides_of(self, models: Sequence[str | None]) -> list[int]:
        """The side each of ``models`` (None: the first installed) renders a request naming
        no size at: from memory while its files are unchanged (no thread, no read: this runs
        before a command's acknowledgement), else read on a thread, those not kept in one hop
        (``read_native_sides``), not one each: a /compare asks for each model of its model
        axis before its acknowledgement."""
        kept = [self.native_sides.kept(model) for model in models]
        unread = [model for model, side in zip(models, kept, strict=True) if side is None]
        read = iter(await asyncio.to_thread(self.read_native_sides, unread) if unread else ())
        return [next(read) if side is None else side for side in kept]

    def read_native_sides(self, models: Sequence[str | None]) -> list[int]:
        """``read_native_side`` of each of ``models`` (blocking)."""
        return [self.read_native_side(model) for model in models]

    def read_native_side(self, model: str | None) -> int:
        """``model``'s native side from its configs, kept in ``native_sides``; when its files
        cannot be read here (a broker's workers hold the models), ``UNKNOWN_MODEL_SIDE``
        (blocking: a folder scan and file reads). Kept by the name, with the stamps of what it
        was read from, of the checkpoint folders' trees (``ModelRegistry.checkpoint_stamps``)
        and of the weights that keep the model offered (``entry_weights``): a checkpoint of the
        name added to a folder searched earlier, a subfolder's included (or, for None, one
        sorting first), or those weights written over, makes it read again."""
        checked_at_ns = self.native_sides.clock()
        folders = self.registry.checkpoint_stamps()
        # Before the lookup: a checkpoint whole by then has the name, one copied in later
        # changes a folder.
        awaited = self.registry.awaited(model)
        try:
            entry = self.registry.resolve(model)
        except RenderInputError:
            # Not logged: ``model`` is what a member typed (README: no typed text is logged),
            # and the render refuses it in its own words.
            read_from, side = Stamps.take(()), UNKNOWN_MODEL_SIDE
        else:
            read_from = Stamps.take(native_side_sources(entry))
            # Its weights written over in place (a half copy) change no folder, and leave the
            # name to a checkpoint behind it: they are stamped with the folders.
            weights = [file for file in entry_weights(entry) if file not in read_from.paths]
            folders = folders.joined(Stamps.take(weights))
            try:
                side = native_side(entry)
            except Exception as error:
                # It only prices: files that do not read, or read as no reader foresaw, price
                # as unknown (kept like any side: said once), never failing every request
                # naming it.
                log.info("no native size for model %s: %r", model, error)
                side = UNKNOWN_MODEL_SIDE
        self.native_sides.keep(model, read_from, folders, side, checked_at_ns, awaited=awaited)
        return side

    def model_names(self) -> list[str]:
        """Installed checkpoints."""
        return self.registry.names()

    def listed_installed(self, model: str) -> bool:
        """Whether ``model`` was installed when the models were last listed and no directory
        of the checkpoint folders' trees has changed since: a ``stat`` per directory, no walk
        and no header read, so the event loop may ask before an acknowledgement. False: list
        them again (``list_models``, blocking)."""
        stamps, names = self.listed_models.latest
        return stamps is not None and model in names and stamps.unchanged()

    def list_models(self) -> frozenset[str]:
        """The installed checkpoints' names, listed now (blocking: run it on a thread)."""
        stamps = self.registry.checkpoint_stamps()
        names = frozenset(self.model_names())
        self.listed_models.latest = (stamps, names)
        return names

    def model_labels(self) -> dict[str, str]:
        """The checkpoints a member can pick as the model (SDXL refiners only finish
        pictures), each labelled with its family: ``my-flux (Flux dev)``. Families come
        from file headers, read again only when a model's files change."""
        labels = {}
        for name, model in sorted(installed_models(self.registry).items()):
            if model.family != FAMILY_NAMES["sdxl-refiner"]:
                labels[name] = name if model.family == UNKNOWN else f"{name} ({model.family})"
        return labels

    def upscaler_names(self) -> list[str]:
        """Lanczos and the installed model upscalers."""
        return self.registry.upscaler_names()

    def styles(self) -> dict[str, Style]:
        return load_styles(self.styles_path)

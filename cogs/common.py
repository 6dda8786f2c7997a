"""Small helpers every cog shares: the bot's services and queue, who acts, submitting a job
and one-sentence ephemeral replies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import discord

from bot.acknowledge_first import AcknowledgeFirst
from bot.compare import redraws_by_seed
from bot.edits import PictureRenderers
from bot.history import StoredJob
from bot.images import check_upload_size
from bot.jobs.accounting import (
    InputSize,
    Member,
    RenderSize,
    compared_models,
    costs_by_its_picture,
    input_picture_size,
)
from bot.jobs.queue import JobQueue, QuotaExceeded, Submission
from bot.jobs.scheduler import PriorityClass
from bot.policy.addons import (
    AddonKind,
    addon_unavailable,
    addons_named,
    installed_addons,
    is_among,
)
from bot.policy.engine_inputs import asks_face_restorer, check_face_restorer
from bot.policy.guild import Admission, GuildList, NsfwPolicy
from bot.policy.moderation import model_allowed, model_left_out, models_rendered
from bot.policy.unavailable import unavailable_here
from bot.presets import (
    Preset,
    SavedValues,
    check_saved_sampler,
    over_saved_settings,
    refused_as_saved,
    refused_by_the_default_note,
    saved_values,
)
from bot.refusals import quota_refused, told_refusal
from bot.requests import (
    Defaults,
    ImagineOptions,
    build_requests,
    check_sampler,
    preset_named,
)
from bot.services import Services, model_rendered_unnamed
from bot.shown_text import ELLIPSIS, as_read, grapheme_boundary, laid_out
from bot.user_errors import Reason, UserError
from cogs.contexts import received_at
from cogs.visibility import (
    check_enabled_here,
    check_member_may_act_here,
    is_age_restricted,
    parent_unseen,
    thread_parent,
)
from cogs.withdrawals import check_posts_there
from cogs.wording import counted
from inference.family_rules import FlowRefusal, check_model_family
from inference.model_list import installed_flow_models
from inference.names import as_typed
from inference.types import RenderInputError, RenderRequest

if TYPE_CHECKING:
    from cogs.results.posting import DiscordResults

log = logging.getLogger(__name__)


class HasServices(Protocol):
    services: Services


def services_of(interaction: discord.Interaction[Any]) -> Services:
    """The services of the bot that received this interaction (see bot.app.EaselBot)."""
    return cast(HasServices, interaction.client).services


# A member's words quoted in a message Easel posts (a prompt, the notes under a result): at
# most this many characters once escaped, so that with what is said around them a message
# stays under Discord's 2,000 (escaping can double a text: `_` becomes `\_`).
MAX_QUOTED_PROMPT = 1500
MAX_CAPTION = 1800
MESSAGE_LIMIT = 2000  # Discord's longest message


def within_message_limit(message: str) -> str:
    """``message`` as Discord takes it: one that quotes a long value is cut in its middle
    to fit (else it is never sent), keeping its end: what is accepted."""
    if len(message) <= MESSAGE_LIMIT:
        return message
    half = (MESSAGE_LIMIT - 1) // 2
    head = grapheme_boundary(message, half)
    tail = grapheme_boundary(message, len(message) - half, forward=True)
    return message[:head] + ELLIPSIS + message[tail:]


def fair_shares(lengths: Sequence[int], room: int) -> list[int]:
    """``room`` characters shared between texts of ``lengths``: the shortest first, each
    its length or an equal share of what the shorter ones left, whichever is less (all
    their lengths when they fit)."""
    shares = list(lengths)
    left, waiting = room, len(lengths)
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        shares[index] = min(lengths[index], left // waiting)
        left, waiting = left - shares[index], waiting - 1
    return shares


# A link Discord would show a preview of (its picture under Easel's post), or one already in
# angle brackets (shown without one, on one line); a link ends at a space, "<" or ">", so
# that "<a>b" can never close early, nor "<https://https://<>" hold a link, and leave it bare.
# Discord reads no markdown within it.
_LINK = r"<(?:https?|steam)://[^\s<>]+>|(?:https?|steam)://[^\s<>]*[^\s<>.,:;\"'\]]"
# Markdown that a member's words could start outside a link, escaped by a backslash before the
# match's last character: a style, code, spoiler or escape character; a masked link's "[";
# a quote, heading or list at a line's start; the "<" of what Discord shows as a pill (a
# mention of a member, role or channel, a command, a custom emoji, a timestamp), which
# ``AllowedMentions.none()`` keeps from pinging but not from showing (a fake "@Moderators").
# discord.py's ``escape_markdown`` is not used:
# its idea of a link runs through ">" (what follows one stayed bare), and it escapes only the
# first of the masked links on a line, leaving what follows it bare.
_MARKDOWN = r"[\\_*~|`\[]|^[ \t]*[>#-]|<(?=[@#/:]|t:|a:)"
_LINK_OR_MARKDOWN = re.compile(
    rf"(?P<link>{_LINK})|(?P<markdown>{_MARKDOWN})", re.IGNORECASE | re.MULTILINE
)


def quoted(text: str, limit: int) -> str:
    """``text`` with Discord's markdown escaped and its links in angle brackets (no preview:
    a member's link never shows an outside picture under Easel's post), without direction
    controls and with no line break but "\\n" (``laid_out``), cut (with "…", never within a
    character as shown) to ``limit`` characters."""
    text = laid_out(text)
    shown = _neutralised(text)
    if len(shown) <= limit:
        return shown
    # The longest start of ``text`` whose form fits (a cut never splits an escape).
    low, high = 0, min(len(text), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_neutralised(text[:middle])) < limit:
            low = middle
        else:
            high = middle - 1
    return _neutralised(text[: grapheme_boundary(text, low)]) + ELLIPSIS


def shown_prompt(prompt: str, limit: int) -> str:
    """A prompt or negative prompt ``quoted`` on one line, its whitespace as the text encoder
    reads it (``as_read``): a run of spaces or lines never pushes its later words past the
    cut. Where it is a record (the picture's infotext, the journal) it stays as typed."""
    return quoted(as_read(prompt), limit)


def _neutralised(text: str) -> str:
    return _LINK_OR_MARKDOWN.sub(_neutralised_part, text)


def _neutralised_part(part: re.Match[str]) -> str:
    if (link := part["link"]) is not None:
        if link.startswith("<"):
            return link
        # A ")" the link did not open closes the text around it ("(see https://x.org/a)"),
        # as Discord reads it.
        kept = link
        while kept.endswith(")") and kept.count("(") < kept.count(")"):
            kept = kept[:-1]
        return f"<{kept}>{link[len(kept) :]}"
    mark = part[0]
    return f"{mark[:-1]}\\{mark[-1]}"


# Set on an interaction once its deferred reply was checked for a public "thinking…".
_THINKING_CHECKED = "easel.thinking_checked"
# The id of the interaction's job, once journaled: its reply is then the job's (its place,
# progress and result edit it), and deleting it would read as a moderator withdrawing the job.
_JOB_RECORDED = "easel.job_recorded"
# What a public "thinking…" says when it cannot go: the channel learns nothing of the answer.
ANSWERED_PRIVATELY = "🔒 Easel answered privately."
# Discord's alias for an interaction's first response; discord.py types message ids as int.
ORIGINAL_RESPONSE: Any = "@original"


# Pauses between the tries to have a job's reply replace its "thinking…" (its place sent
# again, then Discord asked): within seconds unless Discord is failing.
JOB_REPLY_RECHECKS_S = (1.0, 2.0, 4.0, 8.0)


class Thinking(enum.Enum):
    """Whether an interaction's reply may still be a "thinking…" that a follow-up would
    become (``_thinking_in_public``)."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"  # Discord did not answer


def recorded_job(interaction: discord.Interaction[Any]) -> str | None:
    """The id of the job the interaction journaled (``submit_from_interaction``), once it did."""
    return interaction.extras.get(_JOB_RECORDED)


async def tell(interaction: discord.Interaction[Any], message: str) -> None:
    """An ephemeral message to the member, whether or not the interaction was answered yet;
    one that quotes a long value is cut to fit Discord's message (``within_message_limit``).

    A reply that may still be a public "thinking…" would take the message as its own, public
    whatever it asks: it goes first (``_end_public_thinking``). One of a recorded job is the
    job's, never edited nor deleted here, and its "thinking…", private or not, would take the
    message too, for the job's next edit to replace: the job's place is sent again through its
    edits (``ProgressMessages.replace_thinking``) until it replaces it, and the message is not
    sent (logged) if after some 15 s of tries it may still be "thinking…"."""
    message = within_message_limit(message)
    if not interaction.response.is_done():
        await interaction.response.send_message(message, ephemeral=True)
        return
    thinking = await _thinking_in_public(interaction)
    if (job_id := interaction.extras.get(_JOB_RECORDED)) is not None:
        # Its place, progress or result may be landing now: an edit would overwrite them
        # (a result's caption), a deletion withdraw the job as a moderator's does.
        if thinking is not Thinking.NO:
            thinking = await _after_the_job_replies(interaction, job_id)
        if thinking is not Thinking.NO:
            log.warning(
                "a message to user %s is not sent: their job's reply may still be thinking",
                interaction.user.id,
            )
            return
    elif thinking is not Thinking.NO:
        await _end_public_thinking(interaction)
    # Only now is "thinking…" over: a failed look-up or edit leaves the next tell to ask.
    interaction.extras[_THINKING_CHECKED] = True
    await interaction.followup.send(message, ephemeral=True)


async def _after_the_job_replies(interaction: discord.Interaction[Any], job_id: str) -> Thinking:
    """Tried a few times apart until the reply of the interaction's job no longer says
    "thinking…" (``Thinking.NO``): the job's place sent again (its first edit may have
    failed, and a queued job makes no other until it renders), else Discord asked; what
    Discord last said."""
    results = client_of(interaction).results
    thinking = Thinking.UNKNOWN
    for pause_s in JOB_REPLY_RECHECKS_S:
        if await results.replace_thinking(job_id):
            return Thinking.NO
        await asyncio.sleep(pause_s)
        thinking = await _thinking_in_public(interaction)
        if thinking is Thinking.NO:
            break
    return thinking


async def _end_public_thinking(interaction: discord.Interaction[Any]) -> None:
    """Deleted (no job owns it), unless Discord would not delete it: then replaced by a
    neutral line."""
    try:
        await interaction.delete_original_response()
        return
    except discord.NotFound:
        return  # no reply left to become public
    except discord.HTTPException:
        pass  # still public: the edit below hides what follows
    await interaction.edit_original_response(content=ANSWERED_PRIVATELY)


async def _thinking_in_public(interaction: discord.Interaction[Any]) -> Thinking:
    """Whether the interaction's reply may still be a "thinking…" (a deferred reply that
    nothing replaced yet) that a follow-up would become: a public one, or any once a job owns
    it (the job's next edit would replace the follow-up). Asked of Discord until it is known
    not to be: only a reply that may still be thinking costs the request."""
    if interaction.response.type is not discord.InteractionResponseType.deferred_channel_message:
        return Thinking.NO
    if interaction.extras.get(_THINKING_CHECKED) is not None:
        return Thinking.NO
    try:
        # Not ``original_response``: it keeps the first answer, and the reply changes.
        original = await interaction.followup.fetch_message(ORIGINAL_RESPONSE)
    except discord.NotFound:
        return Thinking.NO  # no reply left to become public
    except discord.HTTPException:
        return Thinking.UNKNOWN
    taken = not original.flags.ephemeral or interaction.extras.get(_JOB_RECORDED) is not None
    return Thinking.YES if original.flags.loading and taken else Thinking.NO


class EaselClient(Protocol):
    queue: JobQueue
    results: DiscordResults
    acknowledge_first: AcknowledgeFirst


def client_of(interaction: discord.Interaction[Any]) -> EaselClient:
    """The Easel bot that received this interaction (see bot.app.EaselBot)."""
    return cast(EaselClient, interaction.client)


def queue_of(interaction: discord.Interaction[Any]) -> JobQueue:
    return client_of(interaction).queue


def is_admin(interaction: discord.Interaction[Any]) -> bool:
    """Whether the member manages the server this interaction comes from (a DM has no admin);
    Discord computes the permissions in that server's channel."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (
        permissions.manage_guild or permissions.administrator
    )


def acting_member(interaction: discord.Interaction[Any]) -> Member:
    """Who acts, where, and with what power there: admin power never leaves its server."""
    return Member(
        interaction.user.id, interaction.guild_id, role_ids(interaction), is_admin(interaction)
    )


def role_ids(interaction: discord.Interaction[Any]) -> tuple[int, ...]:
    if isinstance(interaction.user, discord.Member):
        return tuple(role.id for role in interaction.user.roles)
    return ()


def priority_class(request: RenderRequest, priority_role: bool) -> PriorityClass:
    """``--relax`` asks for the lowest class (free, runs when nothing else waits); a server's
    priority role for the highest."""
    if request.options.get("relax"):
        return PriorityClass.RELAX
    return PriorityClass.PRIORITY if priority_role else PriorityClass.STANDARD


@dataclasses.dataclass(frozen=True)
class MemberRequests:
    """What a member's options make: one request per ``--repeat``, the preset they named,
    whether they keep their results private, and the sampler and clip skip they saved, not
    typed (``saved_values``), which admission's refusal of one names where it is kept
    (``submit_from_interaction``'s ``saved``); and the default model they were built with
    (``default_model_for``), read once for what checks them before the defer (/compare)."""

    requests: list[RenderRequest]
    preset: Preset | None
    private: bool
    saved: SavedValues
    default_model: str | None


async def requests_for_member(
    interaction: discord.Interaction[Any], options: ImagineOptions
) -> MemberRequests:
    """``options`` filled in as the member asked: typed options, then the prompt's flags, then
    the preset they name (``--preset``), then their /settings, then the model family's
    defaults (Flux schnell: 4 steps), then the server's defaults; a bad value raises
    ``RequestError``. What the model's family cannot take is refused by admission
    (``admitted_submission``), once, of the request as it will render."""
    services = services_of(interaction)
    personal = await services.member_settings.get(interaction.user.id)
    default_model = await default_model_for(interaction)

    def build(chosen: Preset | None) -> tuple[list[RenderRequest], SavedValues]:
        saved = saved_values(options, chosen, personal)
        check_saved_sampler(saved)
        requests = build_requests(
            options,
            services.request_defaults,
            over_saved_settings(chosen, personal),
            defaults_by_model(services, default_model),
        )
        return requests, saved

    def unless_a_preset_is_named() -> tuple[list[RenderRequest], SavedValues] | None:
        return None if preset_named(options) else build(None)

    # Off the loop: the prompt's flags are parsed (once: ``options`` keeps them) and the
    # model's family read from its file's header (its defaults). Only a named preset, looked
    # up in the database, comes back to the loop between the two.
    built = await asyncio.to_thread(unless_a_preset_is_named)
    chosen = None
    if built is None:
        preset_name = preset_named(options)
        assert preset_name is not None  # named, or the requests were built
        chosen = await services.presets.find(interaction.user.id, interaction.guild_id, preset_name)
        if chosen is not None and chosen.model and not (options.model or options.typed[1].model):
            try:
                await check_model_usable(services, as_typed(chosen.model), interaction.guild_id)
            except UserError as error:
                raise refused_as_saved(error, "model", chosen) from None
        built = await asyncio.to_thread(build, chosen)
    requests, saved = built
    return MemberRequests(requests, chosen, personal.private_results, saved, default_model)


def check_family_takes(
    services: Services,
    request: RenderRequest,
    default_model: str | None,
    allowed_models: Collection[str],
    saved: SavedValues | None = None,
    *,
    vae: bool = False,
) -> None:
    """What the model's family cannot take (fast mode, clip skip or a sampler on Flux, a
    refiner after SD 1.5, a refiner as the model) refused before anything is queued, in the
    engine's own sentence (``inference.family_rules``), not after a wait in the queue and a
    load. A model or refiner ``allowed_models`` (``allowed_models_where``) leaves out is left
    to admission, whose one refusal never tells what the server hides (nor its family). A
    sampler or clip skip the member saved, not typed (``saved``: ``saved_values``'s) is
    refused naming where it is kept (``refused_as_saved``). ``vae``: its VAE too
    (``check_model_family``).
    Reads the model's header (cached per file version): run it on a thread."""
    named = (as_typed(str(name)) for name in models_rendered(request) if name is not None)
    if model_left_out(named, allowed_models) is not None:
        return
    try:
        check_model_family(services.registry, request, default_model, vae=vae)
    except FlowRefusal as error:
        if saved is None or (kept := saved.get(error.feature)) is None:
            raise UserError(str(error)) from None
        raise refused_as_saved(error, error.feature, kept.kept_in) from None
    except RenderInputError as error:
        raise UserError(str(error)) from None


def defaults_by_model(
    services: Services, default_model: str | None
) -> Callable[[str | None], Defaults]:
    """The request defaults by model name: the model's family's (Flux schnell: 4 steps),
    ``default_model`` (``default_model_for``) rendering for a request naming none. What it
    returns reads file headers: call that from a worker thread."""
    return lambda model: services.model_defaults(model, default_model)


async def default_model_for(interaction: discord.Interaction[Any]) -> str | None:
    """The model a request that names none renders with: this server's default, else the
    bot's, among the models the server allows (``moderation.default_model_here``)."""
    return await services_of(interaction).guild_policy.default_model_where(interaction.guild_id)


async def models_allowed_in(
    services: Services, guild_id: int | None, names: Iterable[str]
) -> list[str]:
    """``names`` less the models this server does not allow: a list, an autocomplete or a
    refusal never shows what the server's admins left out."""
    return only_allowed(names, await allowed_models_where(services, guild_id))


def only_allowed(names: Iterable[str], allowed_models: Collection[str]) -> list[str]:
    """``names`` less the models ``allowed_models`` (``allowed_models_where``) leaves out."""
    return [name for name in names if model_allowed(name, allowed_models)]


async def allowed_models_where(services: Services, guild_id: int | None) -> Collection[str]:
    """The models this server's list allows (empty: every model, as in direct messages)."""
    if guild_id is None:
        return ()
    return (await services.guild_policy.settings(guild_id)).entries(GuildList.ALLOWED_MODEL)


async def picture_renderers_in(services: Services, guild_id: int | None) -> PictureRenderers:
    """The models and VAEs installed that ``guild_id`` allows: what a picture's own settings
    may name when it is rendered from again (``bot.edits.request_from_infotext``), which of
    those models are of a flow family and which take distilled guidance
    (``installed_flow_models``), and the model rendering a request that names none here
    (``model_rendered_unnamed``), a stand-in for a picture's model not usable here. The
    folders are walked and the headers read on a thread."""
    default = await services.guild_policy.default_model_where(guild_id)
    models, vaes, flow, stand_in = await asyncio.to_thread(
        lambda: (
            services.model_names(),
            list(services.registry.network_files("vae")),
            installed_flow_models(services.registry),
            model_rendered_unnamed(services.registry, default),
        )
    )
    rules = await services.guild_policy.addon_rules(guild_id)
    usable = await models_allowed_in(services, guild_id, models)
    return PictureRenderers(
        usable,
        rules.usable(AddonKind.VAE, vaes),
        [model for model in usable if model in flow.without_embeddings],
        sorted(flow.distilled_guidance),  # the stand-in among them, where it is not usable
        stand_in,
    )


async def check_model_installed(
    services: Services, model: str | None, guild_id: int | None
) -> None:
    """A model that is not installed (a typo, or one removed since the job a button reuses)
    is refused now, naming those the member may pick here, instead of queued to fail at
    render. A name listed installed, in checkpoint folders unchanged since (subfolders
    included), is taken without a walk; else the folders are walked on a thread (names only:
    no header is read)."""
    if model is None or services.listed_installed(model):
        return
    if model in await asyncio.to_thread(services.list_models):
        return
    raise await _model_unavailable(services, model, guild_id)


async def check_model_usable(services: Services, model: str, guild_id: int | None) -> None:
    """``check_model_installed``, and this server allows it: a model saved in a preset,
    checked on saving and on use (admission checks what a request names)."""
    await check_model_installed(services, model, guild_id)
    if not await models_allowed_in(services, guild_id, [model]):
        raise await _model_unavailable(services, model, guild_id)


async def check_preset_takes(
    services: Services, preset: Preset, guild_id: int | None
) -> str | None:
    """``preset``'s sampler and clip skip refused on saving when no such sampler is, or when
    the model it names cannot take them (Flux: no clip skip; Flux schnell: Euler, UniPC), in
    the render's sentence (``check_family_here``). A preset naming no model is the member's
    on every server, and renders with the default where it is used: what the default of
    ``guild_id`` refuses of it (this server's; Easel's in direct messages) is saved, and told
    in the note returned (``refused_by_the_default_note``; None: nothing)."""
    if preset.sampler is not None:
        check_sampler(preset.sampler)
    try:
        await check_family_here(services, preset.request(), guild_id)
    except UserError as refusal:
        if preset.model is not None:
            raise
        return refused_by_the_default_note(refusal, guild_id)
    return None


async def check_family_here(
    services: Services, request: RenderRequest, guild_id: int | None
) -> None:
    """``check_family_takes`` of ``request`` where ``guild_id``'s default model and list of
    allowed models apply, its header read on a thread."""
    default_model = await services.guild_policy.default_model_where(guild_id)
    allowed = await allowed_models_where(services, guild_id)
    await asyncio.to_thread(check_family_takes, services, request, default_model, allowed)


async def _model_unavailable(services: Services, model: str, guild_id: int | None) -> UserError:
    labels = await asyncio.to_thread(services.model_labels)  # as /models lists them
    usable = await models_allowed_in(services, guild_id, labels)
    return unavailable_here("model", model, usable, "/models")


async def check_addons_installed(
    services: Services,
    request: RenderRequest,
    guild_id: int | None,
    read: Mapping[AddonKind, Collection[str]],
) -> None:
    """A VAE, upscaler or ControlNet the request names that is not installed is refused now,
    naming some of those the member may pick here (the engine's own error names none). The
    folders of a kind are walked on a thread only when the request names one of that kind
    and admission did not list them already (``read``: ``Admission.installed``)."""
    named = addons_named(request)
    for kind in dict.fromkeys(kind for kind, _ in named):
        installed = read.get(kind)
        if installed is None:
            installed = await asyncio.to_thread(installed_addons, services.registry, kind)
        for missing in (name for of, name in named if of is kind):
            if not is_among(kind, missing, installed):
                rules = await services.guild_policy.addon_rules(guild_id)
                raise addon_unavailable(kind, missing, rules.usable_of(kind, installed))


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who asks for a job and where: what the server's rules are applied to."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    role_ids: tuple[int, ...]
    is_admin: bool
    age_restricted: bool  # the channel's NSFW flag
    # A thread's channel: the thread is enabled with it (``GuildPolicy.check_channel``).
    thread_parent_id: int | None = None
    # A thread in a channel Easel may not view (``parent_unseen``): its pictures are journaled
    # as age-restricted, the admission's rule reads ``age_restricted`` alone.
    parent_unseen: bool = False


def first_image(message: discord.Message) -> discord.Attachment | None:
    """The message's first attached picture (None: it has none)."""
    return next(
        (a for a in message.attachments if (a.content_type or "").startswith("image/")), None
    )


def check_render_limits(services: Services, request: RenderRequest) -> None:
    """This server's render limits (size, steps, count...), refused in one sentence."""
    limit = services.limits.refusal(request)
    if limit is not None:
        raise UserError(f"Not rendered: {limit}.", Reason.LIMITS)


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    """Who asks through ``interaction``, and where: roles, admin power, the channel's NSFW flag
    (a thread's is its parent's)."""
    return Requester(
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        role_ids=role_ids(interaction),
        is_admin=is_admin(interaction),
        age_restricted=is_age_restricted(interaction.channel),
        thread_parent_id=thread_parent(interaction.channel),
        parent_unseen=parent_unseen(interaction.channel),
    )


async def admitted_submission(
    services: Services,
    kind: str,
    request: RenderRequest,
    requester: Requester,
    *,
    parent_job_id: str | None,
    private: bool,
    input_size: InputSize | None = None,
    saved: SavedValues | None = None,
    **delivery: Any,
) -> Submission:
    """The job the server's rules make of ``request`` (channel, models, banned words, NSFW,
    priority role), refused with one sentence when over the render limits. ``input_size``:
    the picture it edits, as decoded (else read off the loop). ``saved``: the
    request's sampler and clip skip the member saved, not typed (``MemberRequests``): a
    family's refusal of one says where it is kept. ``delivery``: the interaction fields of a
    Submission, when there is an interaction to answer."""
    admission = await services.guild_policy.admit(
        requester.guild_id,
        requester.channel_id,
        requester.age_restricted,
        request,
        requester.role_ids,
        requester.user_id,
        parent_id=requester.thread_parent_id,
    )
    check_render_limits(services, admission.request)
    await check_model_installed(services, admission.request.model, requester.guild_id)
    await check_addons_installed(
        services, admission.request, requester.guild_id, admission.installed
    )
    # Every path's request as it will render (a picture's own settings, a form's control
    # picture), the family rules told privately here, not after the queue in the channel.
    # ``admit`` filled in the default model (one still unnamed has none anywhere) and read
    # the list these are checked against: no default nor list is read again.
    await asyncio.to_thread(_check_engine_takes, services, admission, saved)
    # A 🔄 or Remix of an edit or an upscale.
    if input_size is None and costs_by_its_picture(admission.request):
        input_size = await asyncio.to_thread(input_picture_size, admission.request)
    return Submission(
        kind=kind,
        request=admission.request,
        user_id=requester.user_id,
        guild_id=requester.guild_id,
        channel_id=requester.channel_id,
        parent_job_id=parent_job_id,
        role_ids=requester.role_ids,
        is_admin=requester.is_admin,
        priority=priority_class(admission.request, admission.priority),
        spoiler=admission.nsfw_policy is NsfwPolicy.SPOILER,
        private=private,
        age_restricted=requester.age_restricted or requester.parent_unseen,
        thread_parent_id=requester.thread_parent_id,
        render_size=await _render_size(services, admission.request, input_size),
        **delivery,
    )


async def _render_size(
    services: Services, request: RenderRequest, input_size: InputSize | None
) -> RenderSize:
    """What ``request``'s estimate is reckoned from: its model's native side, and a /compare
    across models' other models' (each cell at its own; those not kept read in one thread
    hop, before the acknowledgement), with its input picture's size."""
    others = compared_models(request)
    side, *other_sides = await services.native_sides_of([request.model, *others])
    return RenderSize(side, input_size, tuple(zip(others, other_sides, strict=True)))


def _check_engine_takes(
    services: Services, admission: Admission, saved: SavedValues | None
) -> None:
    """What the engine refuses of the admitted request: its model family's rules (its VAE's
    included; a ``saved`` sampler or clip skip refused naming where it is kept) and a face
    restorer it names. Reads headers and folders: run it on a thread."""
    request = admission.request
    check_family_takes(services, request, None, admission.allowed_models, saved, vae=True)
    if asks_face_restorer(request):
        check_face_restorer(request, services.registry)


async def acknowledge(
    interaction: discord.Interaction[Any], *uploads: discord.Attachment, may_be_free: bool = False
) -> bool:
    """Answer Discord now with a deferred "thinking…" for a job made of ``uploads``, private
    exactly when its result will be (the member's /settings: returned), before the work that
    takes seconds: downloading, decoding and checking them (an 8.8 MiB JPEG decodes in nearly
    4 s, past Discord's 3 s). What is known at once is refused first, privately: an upload
    over the size limit by what Discord says of it, whether the member may act here, the
    channel's rules, a quota that has no room for even the smallest job (when reading the
    uploads may make it a free ``--relax`` job, ``may_be_free``: nor for the smallest such
    job, as /imagine's ``--relax`` is bounded). A refusal after this is a private follow-up
    (``tell``), and ``submit_from_interaction`` then defers no more."""
    for upload in uploads:
        check_upload_size(upload.filename, upload.size)
    services = services_of(interaction)
    private = (await services.member_settings.get(interaction.user.id)).private_results
    check_member_may_act_here(interaction, private=private)
    await check_enabled_here(interaction)
    await _check_smallest_job_fits(interaction, may_be_free=may_be_free)
    await defer_thinking(interaction, private=private)
    return private


# Discord's refusal of a second first response to an interaction.
ALREADY_ACKNOWLEDGED = 40060


async def defer_thinking(interaction: discord.Interaction[Any], *, private: bool) -> None:
    """Answer Discord with a deferred "thinking…", seen by the member alone when ``private``.

    Discord may act on the defer and lose its answer (a 5xx): discord.py sends it again, and
    Discord refuses that as already acknowledged (40060). The interaction was acknowledged, by
    this defer: it is marked so and the work goes on, else the member would see "thinking…"
    for 15 minutes and nothing. Only after such a loss (``AcknowledgeFirst.lost_an_answer``,
    from the HTTP trace): a 40060 on a first try is another's answer (a second Easel on the
    same bot token, elsewhere), whose job this one must not journal and charge again. An
    interaction Discord delivers twice is dropped on its second arrival (``cogs.contexts``)."""
    try:
        await interaction.response.defer(thinking=True, ephemeral=private)
    except discord.HTTPException as error:
        if error.code != ALREADY_ACKNOWLEDGED:
            raise
        if not client_of(interaction).acknowledge_first.lost_an_answer(interaction.id):
            raise
        log.info("interaction %s: its defer landed, Discord's answer was lost", interaction.id)
        # discord.py sets this only on an answered defer; it tells that the response is done.
        interaction.response._response_type = (
            discord.InteractionResponseType.deferred_channel_message
        )


# Less than any job costs: one picture, next to no GPU time. What refuses it refuses them all;
# what refuses its free (--relax) form too refuses every job, free or not.
_SMALLEST_JOB = RenderRequest(prompt="", steps=1, width=1, height=1)
_SMALLEST_FREE_JOB = dataclasses.replace(_SMALLEST_JOB, options={"relax": True})


async def _check_smallest_job_fits(
    interaction: discord.Interaction[Any], *, may_be_free: bool
) -> None:
    """Refused (``Reason.QUOTA``; ``Reason.QUEUE``: the queue bound's) when the member's
    limits leave no room for even the smallest job (from memory, else SQLite), nor, when it
    ``may_be_free``, for the smallest ``--relax`` job (a limit of 0, or the relax caps:
    ``bot.policy.quota``); the member is told why each is refused, in one sentence when the
    reasons differ (spending that resets in hours, and jobs of theirs that wait), recorded
    with the --relax job's reason (``quota_refused``). ``submit_from_interaction`` checks
    the job."""
    queue = queue_of(interaction)
    smallest = Submission(
        kind="probe",
        request=_SMALLEST_JOB,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        role_ids=role_ids(interaction),
        is_admin=is_admin(interaction),
    )
    refusal = await queue.quota_refusal(smallest)
    if refusal is None:
        return
    free_refusal = None
    if may_be_free:
        free = dataclasses.replace(smallest, request=_SMALLEST_FREE_JOB)
        free_refusal = await queue.quota_refusal(free)
        if free_refusal is None:
            return
    raise quota_refused(refusal, as_relax=free_refusal)


async def submit_from_interaction(
    interaction: discord.Interaction[Any],
    kind: str,
    request: RenderRequest,
    parent: StoredJob | str | None = None,
    *,
    private: bool = False,
    repeat_seeds: Sequence[int] = (),
    before_queueing: Callable[[], Awaitable[str | None]] | None = None,
    on_journaled: Callable[[], object] | None = None,
    input_size: InputSize | None = None,
    saved: SavedValues | None = None,
    as_many_as_fit: bool = False,
) -> str | None:
    """Check the guild's rules, acknowledge (deferred, within 3 s) unless the caller did
    (``acknowledge``), journal the job and show its place in the queue; the result later edits
    this interaction's response.

    ``parent``: the Easel job whose picture it is made from, withdrawn with it: loaded already
    (a button's, whose posts are then looked for without reading it again), or its id.

    ``before_queueing``: slow work the job needs (Vary (Region) finds its mask in words), done
    once the job was admitted (quota included) and acknowledged; what it raises stops it.
    What it returns, when not None, is the job's parent: the Easel job whose picture it read.

    ``on_journaled``: called as soon as the job is journaled, before anything that may still
    raise (showing its place, the repeats): the job then owns the uploads it names.

    ``input_size``: the size of the picture ``request`` edits, as decoded where it was read:
    its quota reservation then reads no file (``Submission.render_size``).

    ``saved``: ``MemberRequests.saved``, for ``admitted_submission``.

    ``repeat_seeds`` (``--repeat``): one more job of the same request for each seed, charged
    as a job each and refused together up front when they do not all fit the member's quota;
    their results are posted as new messages.

    ``as_many_as_fit`` (a grid made again by Use settings): when its pictures do not all fit
    the member's quota, as many as fit from its first, told in a note, rather than refused.

    Returns the job id, or None when the member's quota refused it (they are told why) or
    they were banned, kicked or timed out in the server since the acknowledgement
    (``submit_unless_stopped``)."""
    # A button or form from a member in timeout; a public result where they may not post one.
    check_member_may_act_here(interaction, private=private)
    services = services_of(interaction)
    requester = requester_of(interaction)
    submission = await admitted_submission(
        services,
        kind,
        request,
        requester,
        parent_job_id=parent.job_id if isinstance(parent, StoredJob) else parent,
        private=private,
        input_size=input_size,
        saved=saved,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        interaction_created_at=interaction.created_at.timestamp(),
        filesize_limit=interaction.filesize_limit,
    )
    queue = queue_of(interaction)
    # Asked before deferring (unless the caller did) so that a refusal is a private sentence.
    # Repeats cost what one request of their pictures together would (--relax: free, but
    # bounded by the member's unfinished jobs and pictures, bot.policy.quota).
    all_pictures = submission.request.count * (1 + len(repeat_seeds))
    refusal = await queue.quota_refusal(
        dataclasses.replace(
            submission, request=dataclasses.replace(submission.request, count=all_pictures)
        ),
        jobs=1 + len(repeat_seeds),
    )
    if refusal is not None and as_many_as_fit:
        submission, refusal = await _as_many_as_fit(queue, submission, refusal)
    if refusal is not None:
        await _refuse(interaction, quota_refused(refusal))
        return None
    if not interaction.response.is_done():  # else ``acknowledge``d before reading uploads
        await defer_thinking(interaction, private=private)
    # In a burst, the commands received before this wait are acknowledged before its job is
    # journaled: only their answers have a deadline (3 s). QUEUED_BOUND_S (1 s) at most, a
    # command slowed by prompt plans holds it SLOWED_BY_PLANS_S (0.1 s) into them; a crash
    # meanwhile loses this acknowledged, unjournaled command (docs/performance.md).
    await client_of(interaction).acknowledge_first.earlier_answered()
    # The parent's posts asked of Discord (seconds): a known parent before the slow work
    # (Vary (Region) in words segments), one ``before_queueing`` finds after it.
    if parent is not None:
        await _check_parent_posts_there(interaction, parent)
    if before_queueing is not None and (made_from := await before_queueing()) is not None:
        if made_from != submission.parent_job_id:
            await _check_parent_posts_there(interaction, made_from)
        submission = dataclasses.replace(submission, parent_job_id=made_from)
    try:
        job_id = await submit_unless_stopped(
            services,
            queue,
            submission,
            began_at=interaction.created_at.timestamp(),
            received_at=received_at(interaction),
        )
    except QuotaExceeded as refused:  # another job of the member's was admitted meanwhile
        await _refuse(interaction, quota_refused(refused))
        return None
    if job_id is None:  # stopped before it was journaled: the acknowledgement goes, silently
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        return None
    interaction.extras[_JOB_RECORDED] = job_id
    if on_journaled is not None:
        on_journaled()
    await client_of(interaction).results.show_queued(
        job_id, interaction, spoiler=submission.spoiler, private=submission.private
    )
    if repeat_seeds:
        await _submit_repeats(interaction, request, submission, repeat_seeds)
    return job_id


async def _as_many_as_fit(
    queue: JobQueue, submission: Submission, refused: QuotaExceeded
) -> tuple[Submission, QuotaExceeded | None]:
    """``submission`` with as many of its pictures, from its first, as the member's limits
    take now, and a note saying why fewer; or ``refused`` when not even its first fits."""
    request = submission.request
    for count in range(request.count - 1, 0, -1):
        fewer = dataclasses.replace(request, count=count)
        if await queue.quota_refusal(dataclasses.replace(submission, request=fewer)) is None:
            first = "its first picture fits" if count == 1 else f"its first {count} fit"
            note = f"the grid has {request.count} pictures; only {first} your quota now"
            fewer = dataclasses.replace(fewer, notes=[*fewer.notes, note])
            return dataclasses.replace(submission, request=fewer), None
    return submission, refused


async def _check_parent_posts_there(
    interaction: discord.Interaction[Any], parent: StoredJob | str
) -> None:
    """A new job is made of a stored result only while that result is still posted: one
    deleted unheard (a gateway gap) withdraws its job and refuses this one
    (``check_posts_there``), as it refuses /show, U1-U4 and DM me. ``parent``: the job, or
    its id (read here)."""
    services = services_of(interaction)
    job = await services.history.job(parent) if isinstance(parent, str) else parent
    if job is not None:
        await check_posts_there(interaction.client, services, job)


async def submit_unless_stopped(
    services: Services,
    queue: JobQueue,
    submission: Submission,
    *,
    began_at: float,
    received_at: float | None = None,
) -> str | None:
    """``queue.submit``, unless the member was banned, kicked or timed out in the
    submission's server since its work began at ``began_at`` (seconds since the epoch: the
    interaction's ``created_at``), or, for a command, since this process received it at
    ``received_at`` (``StoppedMembers.holds``), None then and nothing journaled: the stop's cancels
    (``bot.bans``) read the jobs journaled by then. Work begun after a stop goes on (a kicked
    member who joined again). A stop that comes while this one journals is seen on the way
    out: the job is cancelled here as the stop cancels the others (its maker told alike), and
    its id returned."""
    stopped = services.stopped_members
    member = submission.guild_id, submission.user_id
    if stopped.holds(*member, began_at=began_at, received_at=received_at):
        return None
    job_id = await queue.submit(submission)
    if stopped.holds(*member, began_at=began_at, received_at=received_at):
        await queue.cancel(job_id, submission.member, imposed=True)
    return job_id


async def _refuse(interaction: discord.Interaction[Any], refusal: UserError) -> None:
    """Tell the member ``refusal``, then record it, the same sentence (as ``cogs.errors``
    does): recording never delays the answer, and a refusal Discord would not carry is
    recorded all the same."""
    sentence = str(refusal)
    try:
        await tell(interaction, sentence)
    finally:
        await services_of(interaction).refusals.record(
            interaction.guild_id,
            interaction.channel_id,
            interaction.user.id,
            refusal.reason,
            sentence,
        )


def _repeats(first: int, last: int) -> str:
    """Repeats ``first`` to ``last`` of a --repeat, by number."""
    if first == last:
        return f"repeat {first}"
    return f"repeats {first} and {last}" if last == first + 1 else f"repeats {first} to {last}"


async def _submit_repeats(
    interaction: discord.Interaction[Any],
    request: RenderRequest,
    first: Submission,
    seeds: Sequence[int],
) -> None:
    """The other jobs of a ``--repeat``: no interaction of their own, so each result is
    posted as a new message where the first one would be (privately when it is private).

    A prompt with wildcards or ``{a|b}`` choices may draw other words at a repeat's seeds, so
    each such repeat is admitted again (banned words included), one after the other and each
    within its own planning budget, after the first job was acknowledged: a refusal is told
    privately and stops the repeats that follow, named in the same sentence, which the
    server's dashboard keeps as it keeps every refusal (``_refuse``)."""
    services, queue = services_of(interaction), queue_of(interaction)
    # The repeats are the command's work.
    began_at, received = interaction.created_at.timestamp(), received_at(interaction)
    total = len(seeds) + 1
    redraws = redraws_by_seed(request)
    for index, seed in enumerate(seeds, start=2):
        try:
            if redraws:
                repeat = await admitted_submission(
                    services,
                    first.kind,
                    dataclasses.replace(request, seed=seed),
                    requester_of(interaction),
                    parent_job_id=first.parent_job_id,
                    private=first.private,
                    input_size=first.render_size.input_size,
                    filesize_limit=first.filesize_limit,
                )
            else:
                repeat = dataclasses.replace(
                    first,
                    request=dataclasses.replace(first.request, seed=seed),
                    application_id=None,
                    interaction_token=None,
                    interaction_created_at=None,
                )
            kept = await submit_unless_stopped(
                services, queue, repeat, began_at=began_at, received_at=received
            )
            if kept is None:
                return  # stopped meanwhile: nothing more is made or said
        except (UserError, QuotaExceeded) as error:
            which = f"Repeat {index} of {total}"
            told = (
                told_refusal(str(error), error.reason, of=which)
                if isinstance(error, UserError)
                else quota_refused(error, of=which)
            )
            if index < total:  # the gate ends the repeats after it too: told and recorded
                told = UserError(
                    f"{told} Not queued either: {_repeats(index + 1, total)}.", told.reason
                )
            await _refuse(interaction, told)
            return
    await tell(
        interaction,
        f"🔁 {counted(len(seeds), 'more job')} of this prompt queued (--repeat); each result is "
        "posted when it is ready.",
    )


# The page turns' labels: a word beside each arrow, which a screen reader says (for the
# arrow alone it says "black left-pointing triangle").
PREVIOUS_PAGE, NEXT_PAGE = "◀ Previous", "Next ▶"


def page_turn_button(custom_id: str, label: str, disabled: bool) -> discord.ui.Button[Any]:
    """One of ``page_turns`` (``label``), for a page-turn ``DynamicItem`` to wrap."""
    return discord.ui.Button(
        label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id, disabled=disabled
    )


def turned_label(item: discord.ui.Item[Any]) -> str:
    """The label of the page-turn button clicked (``from_custom_id``'s ``item``)."""
    return (item.label if isinstance(item, discord.ui.Button) else None) or NEXT_PAGE


def page_turns(
    page: int, page_count: int, button: Callable[[int, str, bool], discord.ui.Item[Any]]
) -> discord.ui.View | None:
    """◀ Previous and Next ▶ under a reply of several pages (None for one):
    ``button(page, label, disabled)`` makes each, with its own persistent custom id."""
    if page_count <= 1:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(button(page - 1, PREVIOUS_PAGE, page == 0))
    view.add_item(button(page + 1, NEXT_PAGE, page >= page_count - 1))
    return view

"""Which add-ons installed for the bot (LoRAs, embeddings, VAEs, upscalers, ControlNets) a
server allows, as its model list does: an empty list allows every installed file of that
kind. Applied at admission (``GuildPolicy.admit``) with the server's rules of now, and again
before a queued job renders (``bot.policy.delivery``). Pure: no discord, no torch.

A LoRA, VAE, upscaler or ControlNet the server leaves out is refused, naming only what it
allows (a hires fix's upscaler gives way to Lanczos instead). An embedding it leaves out is
not refused: the job reads its name as plain prompt text, as if it were not installed
(``options["embeddings"]``), so a common word that happens to name an embedding stays usable
there. A ControlNet unit naming no model is given one the server allows
(``options["controlnets"]``). The LoRAs a job's plans apply are kept with it
(``APPLIED_LORAS_OPTION``), and so are the embeddings they name (``USED_EMBEDDINGS_OPTION``):
the start gate checks those, not the prompt as typed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from typing import Any

from bot.user_errors import Reason, UserError
from db.guild_settings import GuildList, GuildSettings
from inference.control_units import OPTION_KEY as CONTROL_UNITS
from inference.control_units import ControlUnit, control_units, controlnet_files
from inference.prompts import extract_extra_networks
from inference.registry import NETWORK_SUFFIX, ModelRegistry, NetworkKind
from inference.types import (
    ALLOWED_CONTROLNETS_OPTION,
    ALLOWED_EMBEDDINGS_OPTION,
    RenderInputError,
    RenderRequest,
)
from inference.upscale import LANCZOS, latent_upscaler
from inference.vae_files import MODEL_VAE_NAMES

__all__ = [
    "ADDON_LISTS",
    "ANY_ADDON",
    "APPLIED_LORAS_OPTION",
    "MAX_NAMED_ADDONS",
    "UPSCALERS_FILLED_OPTION",
    "USED_EMBEDDINGS_OPTION",
    "AddonKind",
    "AddonRules",
    "addon_not_installed",
    "addon_refusal",
    "addons_named",
    "allowed_addons_only",
    "applies_networks",
    "check_loras",
    "installed_addons",
    "is_among",
    "under_addon_rules",
]


class AddonKind(StrEnum):
    LORA = "LoRA"
    EMBEDDING = "embedding"
    VAE = "VAE"
    UPSCALER = "upscaler"
    CONTROLNET = "ControlNet"


ADDON_LISTS: Mapping[AddonKind, GuildList] = {
    AddonKind.LORA: GuildList.ALLOWED_LORA,
    AddonKind.EMBEDDING: GuildList.ALLOWED_EMBEDDING,
    AddonKind.VAE: GuildList.ALLOWED_VAE,
    AddonKind.UPSCALER: GuildList.ALLOWED_UPSCALER,
    AddonKind.CONTROLNET: GuildList.ALLOWED_CONTROLNET,
}
_NETWORK_KINDS: Mapping[AddonKind, NetworkKind] = {
    AddonKind.LORA: "lora",
    AddonKind.EMBEDDING: "embedding",
    AddonKind.VAE: "vae",
}
# Where a member can see the whole list of a kind (the others are named in the refusal only).
_LISTED_BY = {AddonKind.LORA: "/loras", AddonKind.EMBEDDING: "/embeddings"}
# A refusal names up to this many allowed names, then says how many more there are.
MAX_NAMED_ADDONS = 10
# A name the member typed, quoted in a refusal (cut to this many characters).
_MAX_QUOTED = 100
# The LoRAs a job's plans apply (every picture, /compare cell and wildcard draw), in the order
# first met: filled at each admission (``prompt_safety.plan_request``), whatever the request
# held, so a member cannot forge it; the start gate checks these. Absent: a job journaled
# before admission recorded them, whose prompt is read as typed instead.
APPLIED_LORAS_OPTION = "applied_loras"
# Likewise the embeddings a job's planned prompts name, as the engine finds them (whole words in
# any letter case, ``inference.prompts.find_embeddings``), among those installed for the bot or
# on the server's list at admission: the start gate ends a job only for one of these it reads
# that the list leaves out now, so a list started or narrowed leaves the other jobs queued.
# Absent: a job journaled before admission recorded them, checked as a whole (its
# ``ALLOWED_EMBEDDINGS_OPTION`` within the list of now), as then.
USED_EMBEDDINGS_OPTION = "used_embeddings"
# The upscaler options (``_UPSCALER_KEYS``) the bot filled in, not the member: /imagine's hires
# fix (the operator's upscaler) and an upscale naming none. Admission refills them under the
# rules of now (a 🔄 or Remix is not refused for a choice the member never made), and the start
# gate lets a job run with them (docs/security.md): it cannot change a job that may share a
# batch, and ending the job would charge the member's queue for the server's list change.
UPSCALERS_FILLED_OPTION = "upscalers_filled"
_UPSCALER_KEYS = ("hires_upscaler", "upscaler")
# The modes whose jobs apply LoRAs and embeddings (``inference.passes.jobs.image_jobs``):
# /fix-faces and both upscales build theirs with none.
_NETWORK_MODES = frozenset({"txt2img", "img2img", "inpaint"})


@dataclass(frozen=True)
class AddonRules:
    """A server's add-on lists; a kind absent or empty allows every installed file of it.
    ``default_upscaler``: the operator's (EASEL_DEFAULT_UPSCALER), what an upscale naming none
    enlarges with where it is allowed."""

    allowed: Mapping[AddonKind, frozenset[str]]
    default_upscaler: str | None = None

    @classmethod
    def of(cls, settings: GuildSettings, default_upscaler: str | None = None) -> AddonRules:
        lists = {kind: settings.entries(which) for kind, which in ADDON_LISTS.items()}
        return cls(lists, default_upscaler)

    def restricts(self, kind: AddonKind) -> bool:
        return bool(self.allowed.get(kind))

    def allows(self, kind: AddonKind, name: str) -> bool:
        """Whether ``name`` may be used here (``is_among`` the server's list, if any)."""
        allowed = self.allowed.get(kind)
        return not allowed or is_among(kind, name, allowed)

    def usable(self, kind: AddonKind, names: Iterable[str]) -> list[str]:
        """``names`` less those this server leaves out: what a list or chooser may show."""
        return [name for name in names if self.allows(kind, name)]

    def upscaler_here(self, operators: str) -> str:
        """The operator's upscaler for a feature the member does not pick one for (/imagine's
        hires fix), else Lanczos (no file) where the server leaves it out."""
        return operators if self.allows(AddonKind.UPSCALER, operators) else LANCZOS

    def upscale_default(self) -> str:
        """What an upscale naming no upscaler enlarges with where the server lists upscalers:
        the operator's default when allowed here, else the first allowed by name."""
        default = self.default_upscaler
        if default is not None and self.allows(AddonKind.UPSCALER, default):
            return default
        return min(self.allowed[AddonKind.UPSCALER], key=str.casefold)

    def check(self, kind: AddonKind, name: str) -> None:
        if not self.allows(kind, name):
            raise addon_refusal(kind, name, self.allowed.get(kind, frozenset()))


# No lists: every installed add-on (direct messages, and callers that read no server's rules).
ANY_ADDON = AddonRules({})


def is_among(kind: AddonKind, name: str, names: Collection[str]) -> bool:
    """Whether the engine takes ``name`` for one of ``names``: upscalers in any letter case,
    VAEs also by file name (``x.safetensors``, as the web UI records it; any other suffix is
    part of the name: the engine loads ``x.nsfw`` for ``x.nsfw``). What is no file (Lanczos,
    the latent upscalers, the model's own VAE) always is."""
    if kind is AddonKind.UPSCALER:
        if name.casefold() == LANCZOS.casefold() or latent_upscaler(name) is not None:
            return True
        return name.casefold() in {entry.casefold() for entry in names}
    if kind is AddonKind.VAE:
        if name in MODEL_VAE_NAMES or name in names:
            return True
        path = PurePath(name)
        return path.suffix == NETWORK_SUFFIX and path.stem in names
    return name in names


def installed_addons(registry: ModelRegistry, kind: AddonKind) -> list[str]:
    """The names of the files of ``kind`` installed for the bot, in name order (the folders
    are walked: call it from a thread)."""
    if kind is AddonKind.UPSCALER:
        files = registry.upscaler_files()
    elif kind is AddonKind.CONTROLNET:
        files = controlnet_files(registry.models_dir)
    else:
        files = registry.network_files(_NETWORK_KINDS[kind])
    return sorted(files, key=str.casefold)


def addon_refusal(kind: AddonKind, name: str, allowed: Collection[str]) -> UserError:
    """The refusal of ``name``, naming what the server allows of ``kind`` (the first
    ``MAX_NAMED_ADDONS`` by name, then how many more), never anything it leaves out."""
    return UserError(
        f"The {kind} {_typed(name)} is not allowed on this server; it allows: "
        f"{_some_of(kind, allowed)}.",
        Reason.MODEL,
    )


def addon_not_installed(kind: AddonKind, name: str, usable: Collection[str]) -> UserError:
    """The refusal of ``name``, which is not installed, naming some of those of ``kind`` the
    member may use here (``usable``): the engine's own error names none."""
    choices = f"you may use: {_some_of(kind, usable)}" if usable else "there is none you may use"
    return UserError(
        f"The {kind} {_typed(name)} is not installed on this bot; {choices}.", Reason.MODEL
    )


def _typed(name: str) -> str:
    """A name the member typed, as a refusal quotes it (code, so no markdown or link)."""
    return f"`{name.replace('`', '')[:_MAX_QUOTED]}`"


def _some_of(kind: AddonKind, names: Collection[str]) -> str:
    """The first ``MAX_NAMED_ADDONS`` of ``names`` by name, then how many more, and where the
    member finds them all when a command lists that kind."""
    ordered = sorted(names, key=str.casefold)
    shown = ", ".join(ordered[:MAX_NAMED_ADDONS])
    more = len(ordered) - MAX_NAMED_ADDONS
    if more > 0:
        where = _LISTED_BY.get(kind)
        shown += f" and {more} more" + (f"; `{where}` lists them" if where else "")
    return shown


def applies_networks(mode: str) -> bool:
    """Whether a job of ``mode`` applies its prompts' LoRAs and embeddings: admission records
    and checks them, and the start gate reads them, only for these."""
    return mode in _NETWORK_MODES


def check_loras(names: Iterable[str], rules: AddonRules) -> None:
    """Refuse the first LoRA tag (``<lora:name:...>``) the server leaves out, installed or not."""
    for name in names:
        rules.check(AddonKind.LORA, name)


def under_addon_rules(request: RenderRequest, rules: AddonRules) -> RenderRequest:
    """``request`` as the server's add-on lists let it run, or ``UserError`` naming the first
    VAE, upscaler or ControlNet they leave out. The LoRA tags its prompts expand to are checked
    where they are planned (``check_loras``). A hires fix's upscaler the server leaves out gives
    way to Lanczos, as on a new /imagine (a button or Remix reuses the upscaler a picture made
    before the list changed was given; the member did not pick it). Where the server lists its
    embeddings, the job reads only those; where it lists ControlNets, a unit naming none is
    given one of those (``inference.types``' options; an old request's lists are replaced by
    today's); where it lists upscalers, an upscale naming none gets ``upscale_default``, refilled
    at each admission (``UPSCALERS_FILLED_OPTION``). Lanczos, the latent upscalers and the
    model's own VAE are no file: always allowed."""
    options = dict(request.options)
    filled = _filled_upscalers(options)
    if "upscaler" in filled:
        del options["upscaler"]
    hires = options.get("hires_upscaler")
    if isinstance(hires, str) and not rules.allows(AddonKind.UPSCALER, hires):
        options["hires_upscaler"] = LANCZOS
    for kind, name in _named(options):
        rules.check(kind, name)
    filled = [key for key in filled if key == "hires_upscaler" and key in options]
    if _upscale_names_none(request.mode, options) and rules.restricts(AddonKind.UPSCALER):
        options["upscaler"] = rules.upscale_default()
        filled.append("upscaler")
    options.pop(UPSCALERS_FILLED_OPTION, None)
    if filled:
        options[UPSCALERS_FILLED_OPTION] = filled
    options.pop(ALLOWED_EMBEDDINGS_OPTION, None)
    options.pop(ALLOWED_CONTROLNETS_OPTION, None)
    if rules.restricts(AddonKind.EMBEDDING):
        options[ALLOWED_EMBEDDINGS_OPTION] = sorted(rules.allowed[AddonKind.EMBEDDING])
    if rules.restricts(AddonKind.CONTROLNET) and options.get(CONTROL_UNITS):
        options[ALLOWED_CONTROLNETS_OPTION] = sorted(rules.allowed[AddonKind.CONTROLNET])
    if options == request.options:
        return request
    return dataclasses.replace(request, options=options)


def allowed_addons_only(request: RenderRequest, rules: AddonRules) -> None:
    """``UserError`` unless a job admitted earlier still meets the server's add-on lists of
    now (the start and delivery gates, which cannot change the job: it may share a batch):
    each VAE, upscaler (a hires fix's too) and ControlNet it names is allowed, but for an
    upscaler the bot filled in (``UPSCALERS_FILLED_OPTION``, or an upscale naming none: the
    operator's default), which the member never chose; where its mode applies networks
    (``applies_networks``), the LoRAs its plans apply (``APPLIED_LORAS_OPTION``; a job
    journaled before that option, the tags of its prompt as typed) are allowed, and each
    embedding its prompts name and it may read (``USED_EMBEDDINGS_OPTION`` within
    ``ALLOWED_EMBEDDINGS_OPTION``) is allowed; and what admission filled in is still within
    the lists: the ControlNets a unit naming none may be given (and, for a job journaled
    before ``USED_EMBEDDINGS_OPTION``, the embeddings it may read) are among those listed now
    (where a kind is listed now, a job admitted without a list of it is refused)."""
    options = request.options
    for kind, name in _named(options, skipped=_filled_upscalers(options)):
        rules.check(kind, name)
    if applies_networks(request.mode):
        check_loras(_applied_loras(request), rules)
        if rules.restricts(AddonKind.EMBEDDING):
            _check_embeddings_read(options, rules)
    if rules.restricts(AddonKind.CONTROLNET) and any(
        unit.model is None for unit in _control_units(options)
    ):
        _check_filled(options, ALLOWED_CONTROLNETS_OPTION, rules.allowed[AddonKind.CONTROLNET])


def addons_named(request: RenderRequest) -> list[tuple[AddonKind, str]]:
    """The VAE, upscalers (the hires fix's, the upscale's) and ControlNets ``request`` names."""
    return _named(request.options)


def _named(
    options: Mapping[str, Any], skipped: Collection[str] = ()
) -> list[tuple[AddonKind, str]]:
    """The add-ons ``options`` name, less the upscaler options in ``skipped``."""
    named = [(AddonKind.VAE, str(options["vae"]))] if options.get("vae") is not None else []
    for key in _UPSCALER_KEYS:
        if key not in skipped and isinstance(upscaler := options.get(key), str):
            named.append((AddonKind.UPSCALER, upscaler))
    controlnets = [unit.model for unit in _control_units(options) if unit.model is not None]
    return named + [(AddonKind.CONTROLNET, model) for model in controlnets]


def _filled_upscalers(options: Mapping[str, Any]) -> list[str]:
    """The upscaler options the bot filled in (``UPSCALERS_FILLED_OPTION``); anything else
    there is ignored (a member who sends the option gets the bot's choice refilled, no more)."""
    filled = options.get(UPSCALERS_FILLED_OPTION)
    if not isinstance(filled, list):
        return []
    return [key for key in _UPSCALER_KEYS if key in filled]


def _upscale_names_none(mode: str, options: Mapping[str, Any]) -> bool:
    return mode == "upscale" and options.get("upscaler") is None


def _applied_loras(request: RenderRequest) -> list[str]:
    """The LoRAs admission recorded ``request``'s plans apply, else (a job journaled before
    it recorded them) the tags of its prompt as typed."""
    applied = _names_in(request.options, APPLIED_LORAS_OPTION)
    if applied is None:
        tags = extract_extra_networks(request.prompt)[1]
        return [tag.name for tag in tags if tag.kind == "lora"]
    return applied


def _names_in(options: Mapping[str, Any], key: str) -> list[str] | None:
    """The names admission recorded under ``key`` (None: not recorded), or ``UserError`` when
    they are not a list of names."""
    names = options.get(key)
    if names is not None and not (
        isinstance(names, list) and all(isinstance(name, str) for name in names)
    ):
        raise UserError(f"Not rendered: its {key} option is malformed.")
    return names


def _check_embeddings_read(options: Mapping[str, Any], rules: AddonRules) -> None:
    """``UserError`` if the job reads an embedding ``rules`` leave out: one its prompts name
    (``USED_EMBEDDINGS_OPTION``) that admission let it read (``ALLOWED_EMBEDDINGS_OPTION``;
    absent: every installed one). A job journaled before its names were recorded is checked
    as a whole: what it may read must be within the list of now."""
    used = _names_in(options, USED_EMBEDDINGS_OPTION)
    if used is None:
        _check_filled(options, ALLOWED_EMBEDDINGS_OPTION, rules.allowed[AddonKind.EMBEDDING])
        return
    readable = _names_in(options, ALLOWED_EMBEDDINGS_OPTION)
    for name in used:
        if (readable is None or name in readable) and not rules.allows(AddonKind.EMBEDDING, name):
            raise UserError("Not rendered: its prompt uses an embedding the server leaves out now.")


def _check_filled(options: Mapping[str, Any], key: str, allowed: frozenset[str]) -> None:
    """``UserError`` unless the names admission filled in under ``key`` are all ``allowed``."""
    filled = options.get(key)
    if not isinstance(filled, list) or not set(map(str, filled)) <= allowed:
        raise UserError(f"Not rendered: its {key} are not among those the server allows now.")


def _control_units(options: Mapping[str, object]) -> list[ControlUnit]:
    try:
        return control_units(options)
    except RenderInputError as error:  # a stored request's units, checked when made
        raise UserError(f"Not rendered: {error}.") from None

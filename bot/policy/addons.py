"""Which add-ons installed for the bot (LoRAs, embeddings, VAEs, upscalers, ControlNets) a
server allows, as its model list does: an empty list allows every installed file of that
kind. Applied at admission (``GuildPolicy.admit``) with the server's rules of now, and again
before a queued job renders (``bot.policy.delivery``). Pure: no discord, no torch.

A LoRA, VAE, upscaler or ControlNet the server leaves out is refused, naming only what it
allows (a hires fix's upscaler gives way to Lanczos instead). An embedding it leaves out is not
refused: the job reads its name as plain prompt text, as if it were not installed (its plans
record only those it allows: ``AddonRules.embeddings_read``), so a common word that happens to
name an embedding stays usable there. A ControlNet unit naming no model is given one the server
allows (``options["controlnets"]``). The LoRAs a job's plans apply are kept with it
(``APPLIED_LORAS_OPTION``), and so are the embeddings they name (``USED_EMBEDDINGS_OPTION``):
the start gate checks those, not the prompt as typed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePath
from typing import Any

from bot.policy.unavailable import closest_of, named_at_most, quoted, unavailable_here
from bot.user_errors import UserError
from db.guild_settings import GuildList, GuildSettings
from inference.control_units import OPTION_KEY as CONTROL_UNITS
from inference.control_units import ControlUnit, control_units, controlnet_files
from inference.names import as_typed
from inference.prompts import extract_extra_networks
from inference.registry import NETWORK_SUFFIX, ModelRegistry, NetworkKind
from inference.types import (
    ALLOWED_CONTROLNETS_OPTION,
    ALLOWED_EMBEDDINGS_OPTION,
    ALLOWED_LORAS_OPTION,
    APPLIED_LORAS_OPTION,
    UPSCALERS_FILLED_OPTION,
    USED_EMBEDDINGS_OPTION,
    RenderInputError,
    RenderRequest,
)
from inference.upscale import LANCZOS, LATENT_UPSCALERS, latent_upscaler
from inference.vae_files import MODEL_VAE_NAMES

__all__ = [
    "ADDON_LISTS",
    "ANY_ADDON",
    "APPLIED_LORAS_OPTION",
    "UPSCALERS_FILLED_OPTION",
    "USED_EMBEDDINGS_OPTION",
    "AddonKind",
    "AddonRules",
    "addon_unavailable",
    "addons_named",
    "allowed_addons_only",
    "applies_networks",
    "check_loras",
    "installed_addons",
    "is_among",
    "kinds_to_read",
    "listable_addons",
    "lora_suggestions",
    "spelt_as_among",
    "spelt_as_installed",
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
_UPSCALER_KEYS = ("hires_upscaler", "upscaler")
# What enlarges a picture with no file: an upscaler refusal names it among those usable here
# (the latent upscalers only enlarge a hires fix's latents).
_NO_FILE_UPSCALERS = (LANCZOS,)
# The modes whose jobs apply LoRAs and embeddings (``inference.passes.jobs.image_jobs``):
# /fix-faces and both upscales build theirs with none.
_NETWORK_MODES = frozenset({"txt2img", "img2img", "inpaint"})


@dataclass(frozen=True)
class AddonRules:
    """A server's add-on lists; a kind absent or empty allows every installed file of it.
    ``default_upscaler``: the operator's (EASEL_DEFAULT_UPSCALER), what an upscale naming none
    enlarges with where it is allowed; ``hires_upscaler``: the operator's for /imagine's hires
    fix (EASEL_HIRES_UPSCALER), refilled at each admission (None: a filled one is kept).
    ``installed``: the installed files of the kinds read for one request (``kinds_to_read``),
    so that a refusal or a default names only listed files that are still there; a kind
    absent: its list as it is."""

    allowed: Mapping[AddonKind, frozenset[str]]
    default_upscaler: str | None = None
    hires_upscaler: str | None = None
    installed: Mapping[AddonKind, Collection[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        settings: GuildSettings,
        default_upscaler: str | None = None,
        hires_upscaler: str | None = None,
    ) -> AddonRules:
        lists = {kind: settings.entries(which) for kind, which in ADDON_LISTS.items()}
        return cls(lists, default_upscaler, hires_upscaler)

    def restricts(self, kind: AddonKind) -> bool:
        return bool(self.allowed.get(kind))

    def allows(self, kind: AddonKind, name: str) -> bool:
        """Whether ``name`` may be used here (``is_among`` the server's list, if any)."""
        allowed = self.allowed.get(kind)
        return not allowed or is_among(kind, name, allowed)

    def usable(self, kind: AddonKind, names: Iterable[str]) -> list[str]:
        """``names`` less those this server leaves out: what a list or chooser may show."""
        return [name for name in names if self.allows(kind, name)]

    def embeddings_read(self, installed: Collection[str]) -> Collection[str]:
        """The embeddings a job here may read, ``installed`` being those installed for the
        bot: those the server lists (a worker may have one the bot lacks), else all of them.
        The others' names are plain prompt text for it."""
        return (
            self.allowed[AddonKind.EMBEDDING] if self.restricts(AddonKind.EMBEDDING) else installed
        )

    def usable_of(self, kind: AddonKind, installed: Iterable[str]) -> list[str]:
        """What a member may use here of ``kind``, ``installed`` being its files: those the
        server allows, and for upscalers Lanczos, which is no file (a refusal names it)."""
        return self.usable(kind, _with_no_file(kind, installed))

    def upscaler_here(self, operators: str) -> str:
        """The operator's upscaler for a feature the member does not pick one for (/imagine's
        hires fix), else Lanczos (no file) where the server leaves it out or its file is gone
        (the bot's choice, so no note: the member never named it)."""
        return operators if self._works_here(AddonKind.UPSCALER, operators) else LANCZOS

    def upscale_default(self) -> str:
        """What an upscale naming no upscaler enlarges with where the server lists upscalers:
        the operator's default when allowed (and installed) here, else the first listed by
        name that is installed and can enlarge a picture (a latent upscaler is for the hires
        fix only), else Lanczos."""
        default = self.default_upscaler
        if default is not None and self._works_here(AddonKind.UPSCALER, default):
            return default
        enlarging = self._listed_working(AddonKind.UPSCALER, enlarging=True)
        return min(enlarging, key=str.casefold) if enlarging else LANCZOS

    def enlarging_here(self) -> list[str]:
        """What an upscale may name here: Lanczos and the model upscalers the server allows
        that are installed (where read; else those it lists). A latent upscaler enlarges a
        hires fix's latents, never a picture."""
        installed = self.installed.get(AddonKind.UPSCALER)
        files = (
            self.allowed.get(AddonKind.UPSCALER, frozenset()) if installed is None else installed
        )
        models = [name for name in files if latent_upscaler(name) is None]
        return self.usable_of(AddonKind.UPSCALER, models)

    def check(self, kind: AddonKind, name: str, *, enlarging: bool = False) -> None:
        """``UserError`` where the server leaves ``name`` out, naming what of its list works
        here (installed, or no file); ``enlarging``: an upscaler that enlarges a picture,
        which no latent upscaler does."""
        if not self.allows(kind, name):
            listed = self._listed_working(kind, enlarging=enlarging)
            raise addon_unavailable(kind, name, _with_no_file(kind, listed))

    def _listed_working(self, kind: AddonKind, *, enlarging: bool) -> list[str]:
        listed = self._working(kind, self.allowed.get(kind, frozenset()))
        if enlarging and kind is AddonKind.UPSCALER:
            return [name for name in listed if latent_upscaler(name) is None]
        return listed

    def _works_here(self, kind: AddonKind, name: str) -> bool:
        """Whether the server allows ``name`` and it is installed (where that was read)."""
        return self.allows(kind, name) and bool(self._working(kind, [name]))

    def _working(self, kind: AddonKind, names: Iterable[str]) -> list[str]:
        """``names`` less the files not installed, where the installed ones were read."""
        installed = self.installed.get(kind)
        return [name for name in names if installed is None or is_among(kind, name, installed)]


# No lists: every installed add-on (direct messages, and callers that read no server's rules).
ANY_ADDON = AddonRules({})


def is_among(kind: AddonKind, name: str, names: Collection[str]) -> bool:
    """Whether the engine takes ``name`` for one of ``names``: upscalers in any letter case,
    VAEs also by file name (``x.safetensors``, as the web UI records it; any other suffix is
    part of the name: the engine loads ``x.nsfw`` for ``x.nsfw``). What is no file (Lanczos,
    the latent upscalers, the model's own VAE) always is. ``name`` is taken ``as_typed``, as
    ``names`` (the registry's) are."""
    name = as_typed(name)
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


def spelt_as_among(name: str, names: Iterable[str]) -> str | None:
    """``name`` as ``names`` spell it: itself where it is one of them, else the only one equal
    to it in any letter case (None: none is, or several are: which one is not guessed). An
    admin's list stores Lanczos, not ``lanczos``, and a file's name as the registry has it
    (``as_typed``, as ``name`` is taken)."""
    name = as_typed(name)
    listed = list(names)
    if name in listed:
        return name
    folded = [entry for entry in listed if entry.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def spelt_as_installed(
    what: str,
    name: str,
    installed: Iterable[str],
    advice: str = "Pick one from the name choices.",
) -> str:
    """``name`` as the installed ``what`` ("model", "LoRA"...) an admin names is spelt
    (``spelt_as_among``), else ``UserError``: none is installed at all (the operator's to
    fix), several differ from it in letter case only (named: which one is meant is not
    guessed), or none is it (the closest ones, then ``advice``: by default the command's
    name choices, which list them)."""
    files = list(installed)
    spelt = spelt_as_among(name, files)
    if spelt is not None:
        return spelt
    if not files:
        raise UserError(f"No {what} is installed; ask Easel's operator to install one.")
    alike = sorted(file for file in files if file.casefold() == name.casefold())
    if alike:
        spellings = " and ".join(map(quoted, alike))
        raise UserError(f"{quoted(name)} matches the {what}s {spellings}; type one exactly.")
    raise UserError(
        f"No {what} named {quoted(name)} is installed{closest_of(name, files)} {advice}"
    )


def model_spelt_as_installed(name: str, installed: Iterable[str]) -> str:
    """``spelt_as_installed`` for a model an admin allows, saying where Easel looked for it
    and what it takes for one."""
    looked_for = (
        f"Easel looked in its models folder (EASEL_MODELS_DIR) for {quoted(name + '.safetensors')}"
        f" (or .gguf, or .ckpt where the operator allows pickles) or a diffusers folder "
        f"{quoted(name + '/')}; `/models` lists those installed."
    )
    return spelt_as_installed("model", name, installed, looked_for)


def installed_addons(registry: ModelRegistry, kind: AddonKind) -> list[str]:
    """The names of the files of ``kind`` installed for the bot, in name order (the folders
    are walked: call it from a thread)."""
    if kind is AddonKind.UPSCALER:
        files = registry.upscaler_files()
    elif kind is AddonKind.CONTROLNET:
        files = controlnet_files(registry)
    else:
        files = registry.network_files(_NETWORK_KINDS[kind])
    return sorted(files, key=str.casefold)


def listable_addons(registry: ModelRegistry, kind: AddonKind) -> list[str]:
    """What an admin may list of ``kind``: the installed files, and for upscalers the
    built-in ones first (Lanczos, the latent ones), so that a list can say "Lanczos only"
    (they are always allowed, but listing one starts the list: model upscalers are then left
    out unless listed). Walks the folders: call it from a thread."""
    built_in = [LANCZOS, *LATENT_UPSCALERS] if kind is AddonKind.UPSCALER else []
    return [*built_in, *installed_addons(registry, kind)]


def _with_no_file(kind: AddonKind, names: Iterable[str]) -> list[str]:
    """``names`` with Lanczos first for upscalers (once: a list may hold it)."""
    no_file = _NO_FILE_UPSCALERS if kind is AddonKind.UPSCALER else ()
    return list(dict.fromkeys([*no_file, *names]))


def addon_unavailable(kind: AddonKind, name: str, usable: Collection[str]) -> UserError:
    """The refusal of ``name``, not installed or left out by the server (one sentence for
    both), naming only those of ``kind`` the member may use here (``usable``)."""
    return unavailable_here(str(kind), name, usable, _LISTED_BY.get(kind))


def _latent_upscale_refused(name: str, enlarging: Collection[str]) -> UserError:
    """An upscale naming a latent upscaler: allowed everywhere (no file), but it enlarges a
    hires fix's latents, never a picture. ``enlarging``: what an upscale may name here."""
    return UserError(
        f"The upscaler {quoted(name)} only enlarges a hires fix's latents, not a picture; "
        f"/upscale takes: {named_at_most(enlarging)}."
    )


def applies_networks(mode: str) -> bool:
    """Whether a job of ``mode`` applies its prompts' LoRAs and embeddings: admission records
    and checks them, and the start gate reads them, only for these."""
    return mode in _NETWORK_MODES


def check_loras(
    names: Collection[str],
    rules: AddonRules,
    installed: Callable[[], Collection[str]] | None = None,
) -> None:
    """Refuse the first LoRA tag (``<lora:name:...>``) the server leaves out or, where the
    installed ones are known (``installed``, the LoRA files' names, listed once when there is
    a tag; None: not known here, the server's list as it is), that is not installed: in the
    words the ``lora`` option refuses one with (``addon_unavailable``), naming the closest of
    those the member may use here. A tag is never ignored: the member would pay for a picture
    without it."""
    files = installed() if installed is not None and names else None
    if files is not None:
        rules = dataclasses.replace(rules, installed={**rules.installed, AddonKind.LORA: files})
    for name in names:
        if files is not None and not is_among(AddonKind.LORA, name, files):
            raise addon_unavailable(AddonKind.LORA, name, rules.usable_of(AddonKind.LORA, files))
        rules.check(AddonKind.LORA, name)


def lora_suggestions(mode: str, applied: list[str], rules: AddonRules) -> dict[str, list[str]]:
    """What a planned request records of the LoRAs an unknown tag's "did you mean" may name
    (``ALLOWED_LORAS_OPTION``): where the server lists LoRAs and ``mode`` applies them, the
    LoRAs its plans apply (``applied``, each on the list: ``check_loras``), so the engine's
    warning (posted with the picture) never names one the server leaves out, and the job
    carries no more names than its prompts do (not the whole list). Elsewhere none: every
    installed LoRA may be named."""
    if rules.restricts(AddonKind.LORA) and applies_networks(mode):
        return {ALLOWED_LORAS_OPTION: applied}
    return {}


def under_addon_rules(request: RenderRequest, rules: AddonRules) -> RenderRequest:
    """``request`` as the server's add-on lists let it run, or ``UserError`` naming the first
    VAE, upscaler or ControlNet they leave out. The LoRA tags its prompts expand to are checked
    where they are planned (``check_loras``; ``lora_suggestions``). A hires fix's upscaler the
    bot filled in is chosen again (``upscaler_here`` of the operator's), and one the member
    chose that the server leaves out gives way to Lanczos, as on a new /imagine (a button or
    Remix reuses the upscaler a picture was given before the list changed). Where the server
    lists ControlNets, a unit naming none is given one of those (``inference.types``' options;
    an old request's lists are replaced by today's); where it lists upscalers, an upscale
    naming none gets ``upscale_default``, refilled at each admission
    (``UPSCALERS_FILLED_OPTION``). Lanczos, the latent upscalers and the model's own VAE are no
    file: always allowed."""
    options = dict(request.options)
    notes = list(request.notes)
    filled = _filled_upscalers(options)
    if "upscaler" in filled:
        del options["upscaler"]
    hires = options.get("hires_upscaler")
    if "hires_upscaler" in filled and hires is not None and rules.hires_upscaler is not None:
        options["hires_upscaler"] = rules.upscaler_here(rules.hires_upscaler)
    elif isinstance(hires, str) and not rules.allows(AddonKind.UPSCALER, hires):
        options["hires_upscaler"] = LANCZOS
        # The member chose it (a picture's, reused): told, as an imported one is.
        notes.append(f"hires upscaler {hires!r} is not allowed here; {LANCZOS} is used instead")
    # A hires upscaler left out gave way above: an upscaler refused here enlarges a picture.
    for kind, name in _named(options):
        rules.check(kind, name, enlarging=True)
    if _upscales_with_latent(request.mode, options):
        raise _latent_upscale_refused(options["upscaler"], rules.enlarging_here())
    filled = [key for key in filled if key == "hires_upscaler" and key in options]
    if _upscale_names_none(request.mode, options) and rules.restricts(AddonKind.UPSCALER):
        options["upscaler"] = rules.upscale_default()
        filled.append("upscaler")
    options.pop(UPSCALERS_FILLED_OPTION, None)
    if filled:
        options[UPSCALERS_FILLED_OPTION] = filled
    options.pop(ALLOWED_LORAS_OPTION, None)  # the planning records it again
    # An older version's copy of the list: the planning records the embeddings read instead.
    options.pop(ALLOWED_EMBEDDINGS_OPTION, None)
    options.pop(ALLOWED_CONTROLNETS_OPTION, None)
    if rules.restricts(AddonKind.CONTROLNET) and options.get(CONTROL_UNITS):
        options[ALLOWED_CONTROLNETS_OPTION] = sorted(rules.allowed[AddonKind.CONTROLNET])
    if options == request.options:
        return request
    return dataclasses.replace(request, options=options, notes=notes)


def allowed_addons_only(request: RenderRequest, rules: AddonRules) -> None:
    """``UserError`` unless a job admitted earlier still meets the server's add-on lists of now
    (the start and delivery gates, which cannot change the job: it may share a batch): each
    VAE, upscaler (a hires fix's too) and ControlNet it names is allowed, but for an upscaler
    the bot filled in (``UPSCALERS_FILLED_OPTION``, or an upscale naming none: the operator's
    default), which the member never chose; where its mode applies networks
    (``applies_networks``), the LoRAs its plans apply (``APPLIED_LORAS_OPTION``; a job
    journaled before that option, the tags of its prompt as typed) are allowed, and each
    embedding its plans read (``USED_EMBEDDINGS_OPTION``; a job journaled before the fourteenth
    stop, within the list it carried: ``ALLOWED_EMBEDDINGS_OPTION``) is allowed; and what
    admission filled in is still within the lists: the ControlNets a unit naming none may be
    given (and, for a job journaled before ``USED_EMBEDDINGS_OPTION``, the embeddings it may
    read) are among those listed now (where a kind is listed now, a job admitted without a list
    of it is refused)."""
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


def kinds_to_read(request: RenderRequest, rules: AddonRules) -> list[AddonKind]:
    """The kinds whose installed files ``under_addon_rules`` needs for ``request``
    (``AddonRules.installed``): those the server lists that it names, upscalers for an
    upscale whose upscaler is given (``upscale_default``) where they are listed, and upscalers
    wherever a hires fix's upscaler is refilled (``upscaler_here``) or an upscale names a
    latent upscaler (its refusal names those installed: ``enlarging_here``), listed or not."""
    kinds = [kind for kind, _ in _named(request.options)]
    if request.mode == "upscale":
        kinds.append(AddonKind.UPSCALER)
    read = [kind for kind in dict.fromkeys(kinds) if rules.restricts(kind)]
    refilled = "hires_upscaler" in _filled_upscalers(request.options)
    refilled = refilled and rules.hires_upscaler is not None
    latent = _upscales_with_latent(request.mode, request.options)
    if (refilled or latent) and AddonKind.UPSCALER not in read:
        read.append(AddonKind.UPSCALER)
    return read


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


def _upscales_with_latent(mode: str, options: Mapping[str, Any]) -> bool:
    """Whether an upscale names a latent upscaler, which enlarges no picture: refused at
    admission (``enlarging_here`` named), where the render would fail."""
    upscaler = options.get("upscaler")
    return mode == "upscale" and isinstance(upscaler, str) and latent_upscaler(upscaler) is not None


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
    """``UserError`` if the job reads an embedding ``rules`` leave out: one its plans read
    (``USED_EMBEDDINGS_OPTION``; a job journaled before the fourteenth stop, those of them
    within the list it carried, ``ALLOWED_EMBEDDINGS_OPTION``, which no job carries now). A job
    journaled before its names were recorded is checked as a whole: what it may read must be
    within the list of now."""
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

"""``easel``: the command line. Arguments are validated before any model loads."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bot.cli.control import (
    ControlUsageError,
    add_control_options,
    check_controls_installed,
    control_units_from_args,
)
from bot.cli.entry import SERVING_COMMANDS
from bot.logging_setup import install_logging
from bot.process_end import SETTINGS_EXIT_STATUS, EarlyStop, turn_off_core_dumps
from bot.redaction import redact_url
from bot.requests import Defaults, ImagineOptions, RequestError, build_request, resolve_seed
from bot.settings import Settings, SettingsError, load_settings, warn_of_unknown_settings
from inference.image_prompts import IMAGE_PROMPT_MODES
from inference.limits import MAX_STEPS, MIN_STEPS, STEPS_ACCEPTS, out_of_range
from inference.types import RenderRequest
from inference.upscale import DEFAULT_CREATIVE_STRENGTH, UPSCALE_FACTORS

if TYPE_CHECKING:  # the registry is imported where it is used, to keep start-up light
    from inference.registry import ModelRegistry

# Longer --infotext values are the text itself, never a file name.
_LONGEST_PATH = 4096
# How much of --init-image is redrawn when --strength is not given.
IMG2IMG_STRENGTH = 0.75


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line that names the argument, as the contract asks (argparse prints usage too).
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="required unless --infotext gives one")
    parser.add_argument(
        "--infotext",
        metavar="FILE|TEXT",
        help="render from these settings (a PNG, a text file or the text itself); "
        "the other options override them",
    )
    parser.add_argument("--negative")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=_steps)
    parser.add_argument("--cfg", type=float)
    parser.add_argument("--sampler")
    parser.add_argument(
        "--schedule-type", help="the web UI's schedule type, e.g. Karras (default: Automatic)"
    )
    parser.add_argument("--size", help="WxH or an aspect ratio such as 16:9")
    parser.add_argument("--model")
    parser.add_argument("--count", type=int)
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: a few-step model's own recipe, else a UNet feature cache (DeepCache)",
    )
    parser.add_argument("--variation-seed", type=int)
    parser.add_argument("--variation-strength", type=float)
    parser.add_argument("--init-image", type=Path, help="img2img from this picture")
    parser.add_argument(
        "--strength",
        type=float,
        help=f"img2img denoising 0-1 (default {IMG2IMG_STRENGTH}; needs --init-image)",
    )
    parser.add_argument("--mask", type=Path, help="inpaint the white area (needs --init-image)")
    parser.add_argument("--refiner", help="an SDXL refiner model that finishes the picture")
    parser.add_argument(
        "--refiner-switch",
        type=float,
        help="share of the steps the model runs before the refiner (0.01-0.99, default 0.8)",
    )
    add_control_options(parser)
    parser.add_argument(
        "--sref",
        type=Path,
        action="append",
        help="an image prompt (IP-Adapter) from this picture; repeat for up to 5, averaged",
    )
    parser.add_argument("--sref-strength", type=float, help="0-2 (default 1 style-only, 0.6 full)")
    parser.add_argument(
        "--sref-mode",
        choices=IMAGE_PROMPT_MODES,
        default="auto",
        help="style: only SDXL's style layers; full: every layer; auto: style where possible",
    )
    parser.add_argument(
        "--faces-prompt", help="with --faces in the prompt: the faces' prompt (default: the prompt)"
    )
    parser.add_argument(
        "--faces-strength", type=float, help="with --faces: the faces' denoising (default 0.4)"
    )
    parser.add_argument(
        "--faces-confidence", type=float, help="the face detector's threshold (default 0.3)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")


def _add_upscale_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the picture to enlarge")
    parser.add_argument("--scale", type=int, choices=UPSCALE_FACTORS, default=UPSCALE_FACTORS[0])
    parser.add_argument(
        "--mode",
        choices=["fast", "creative"],
        default="fast",
        help="fast: the upscaler only; creative: then a diffusion re-detail in tiles",
    )
    parser.add_argument(
        "--upscaler",
        help="an installed upscaler or Lanczos (default: EASEL_DEFAULT_UPSCALER, else the "
        "first model upscaler, else Lanczos)",
    )
    parser.add_argument(
        "--strength", type=float, default=DEFAULT_CREATIVE_STRENGTH, help="creative denoising 0-1"
    )
    parser.add_argument("--prompt", default="", help="creative: else the picture's own prompt")
    parser.add_argument("--model")
    parser.add_argument("--steps", type=_steps, default=20)
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG")


EXPLAIN_DESCRIPTION = (
    "Print how a prompt is understood, as strict JSON: the weight of an extra-network tag the "
    "engine ignores that is no finite number (<a:x:nan>) is null, and a warning names it as "
    "typed."
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="easel", description="A Stable Diffusion studio for Discord servers.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("run", help="run the Discord bot (reads .env)")
    commands.add_parser("worker", help="serve the broker named by EASEL_QUEUE_URL")
    _add_render_options(commands.add_parser("render", help="one generation without Discord"))
    _add_upscale_options(commands.add_parser("upscale", help="enlarge a picture 2x or 4x"))
    explain = commands.add_parser(
        "explain",
        help="print how a prompt is understood, as JSON",
        description=EXPLAIN_DESCRIPTION,
    )
    explain.add_argument("prompt")
    explain.add_argument("--negative", default="")
    explain.add_argument("--seed", type=int)
    explain.add_argument("--steps", type=_steps, default=20)
    tiny = commands.add_parser("tiny-model", help="write a small random-weight model to DIR")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument(
        "--family",
        choices=["sd15", "sdxl", "sdxl-refiner", "sd3", "flux", "flux-schnell"],
        default="sd15",
        help="sdxl-refiner: a tiny SDXL refiner (for --refiner with a tiny sdxl model); "
        "sd3, flux (dev), flux-schnell: tiny flow-matching models",
    )
    tiny.add_argument("--inpainting", action="store_true")
    tiny.add_argument(
        "--upscaler",
        type=int,
        choices=[2, 4],
        metavar="SCALE",
        help="instead, write a tiny ESRGAN upscaler as DIR/tiny-esrgan-<SCALE>x.safetensors",
    )
    tiny.add_argument(
        "--faces",
        action="store_true",
        help="instead, write a tiny random face restorer (RestoreFormer) as "
        "DIR/face_restore/tiny-restoreformer.safetensors (DIR being EASEL_MODELS_DIR)",
    )
    tiny.add_argument(
        "--controlnet",
        action="store_true",
        help="also write a tiny ControlNet for DIR's model as "
        "DIR/../ControlNet/<DIR name>-controlnet.safetensors (DIR being EASEL_MODELS_DIR/NAME)",
    )
    tiny.add_argument(
        "--ipadapter",
        action="store_true",
        help="also write a tiny IP-Adapter for DIR's model as DIR/../ipadapter/<DIR name>-"
        "ipadapter.safetensors, with a tiny image encoder in DIR/../ipadapter/image_encoder/",
    )
    commands.add_parser("doctor", help="check settings, models, devices, database and broker")
    restore = commands.add_parser(
        "restore",
        help="put a backup of the database back in EASEL_DATA_DIR (the bot stopped)",
        description="Check BACKUP_FILE whole, remove the database's -wal and -shm, copy it in "
        "as the database, and make the next start end the jobs it held queued or running "
        "(refunded, not posted again). Put images/ and inputs/ back from the same backup.",
    )
    restore.add_argument("backup_file", metavar="BACKUP_FILE", type=Path)
    commands.add_parser("health", help="ask the metrics server (EASEL_METRICS_ADDR) if all is up")
    return parser


# What `easel run` and `easel worker` create (the database, pictures, uploads, secrets, caches)
# only their own user may read: members' prompts and pictures are in there.
PRIVATE_UMASK = 0o077


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot import event_loop
    from bot.app import run
    from bot.jobs.broker.wire import BrokerUnavailable
    from bot.jobs.retention import NothingPrunedFirst
    from bot.metrics import MetricsServerError
    from bot.restores import PicturesWithoutDatabase, damaged_database_problem
    from bot.single_instance import DataDirInUse
    from db.database import SchemaTooNew

    settings.require_token()
    os.umask(PRIVATE_UMASK)
    try:
        # A stop heard since the process began (``bot.cli.entry``) ends it before it starts.
        return event_loop.run(run(settings, early_stop=args.early_stop))
    except (
        BrokerUnavailable,
        MetricsServerError,
        SchemaTooNew,
        DataDirInUse,
        PicturesWithoutDatabase,
    ) as error:
        raise UsageError(str(error)) from None
    except Exception as error:
        if (damaged := damaged_database_problem(settings.database_path, error)) is not None:
            raise UsageError(damaged) from None
        if isinstance(error, NothingPrunedFirst):
            remedy = f"free space there by hand ({error})"
        else:
            if settings.retention_days:
                setting = f"lower EASEL_RETENTION_DAYS (now {settings.retention_days})"
            else:
                setting = "set EASEL_RETENTION_DAYS above 0 (now 0: kept forever)"
            remedy = (
                f"free space there, or {setting} and start again, which deletes the older jobs'"
                " pictures first"
            )
        if (full := _disk_full(settings, error, remedy)) is None:
            raise
        raise UsageError(full) from None


def _disk_full(settings: Settings, error: BaseException, data_dir_remedy: str) -> str | None:
    """One line for a start or run that found no room (``found_no_room(error)``, EASEL_DATA_DIR
    asked too: the run closed its database, so no open one names it), None for another
    error: in EASEL_DATA_DIR when SQLite's write or one of a file in it failed
    (``data_dir_remedy``), else on the disk of the file that failed (a full /tmp of a
    compiler's cache). A file's write that names no file (``Path.write_text``'s) counts as the
    data folder's when it is nearly full."""
    from bot import event_loop
    from bot.jobs.retention import START_ROOM_BYTES, free_bytes
    from db.database import found_no_room

    full = event_loop.run(found_no_room(error, folders=(settings.data_dir,)))
    if full is None:
        return None
    data_dir = settings.data_dir.resolve()
    free = free_bytes(data_dir)
    if isinstance(full, OSError):
        if full.filename is not None:
            path = Path(os.fsdecode(full.filename)).resolve()
            if not path.is_relative_to(data_dir):
                there = _said(free_bytes(path))
                return f"{path}: its disk is full ({there}; {full}): free space there"
        elif free is not None and free >= START_ROOM_BYTES:
            return (
                f"a write found its disk full ({full}), not EASEL_DATA_DIR's ({data_dir}: "
                f"{free} bytes free): free space on the disk it wrote to (TMPDIR, a cache's)"
            )
    return f"EASEL_DATA_DIR={data_dir} is full ({_said(free)}; {full}): {data_dir_remedy}"


def _said(free: int | None) -> str:
    return "free space unknown" if free is None else f"{free} bytes free"


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.queue_url:
        raise UsageError(
            "EASEL_QUEUE_URL is empty: set it to the broker the bot uses, "
            "e.g. nats://127.0.0.1:4222"
        )
    # Before torch's import (seconds): a stop meanwhile ends the worker as one after it does.
    early_stop = args.early_stop or EarlyStop()
    from bot.engines import engine_factory_for
    from bot.jobs.broker.job_files import JobFilesUnusable
    from bot.jobs.broker.wire import BrokerUnavailable
    from bot.jobs.broker.worker import JOB_INPUTS_FOLDER, WorkerConfig, run_worker
    from bot.metrics import MetricsServerError
    from inference.devices import resolve_devices

    try:
        devices = resolve_devices(settings.devices)
        config = WorkerConfig(
            settings.queue_url,
            devices,
            metrics_endpoint=settings.metrics_endpoint,
            warm_devices=frozenset(d for d in devices if settings.warms_up(d)),
            job_files_root=settings.data_dir / JOB_INPUTS_FOLDER,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    install_logging(settings.log_format, secrets=settings.log_secrets)
    warn_of_unknown_settings()
    os.umask(PRIVATE_UMASK)
    try:
        return run_worker(config, engine_factory_for(settings), early_stop)
    except (BrokerUnavailable, MetricsServerError, JobFilesUnusable) as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # its compile cache and model hashes, in EASEL_DATA_DIR
        if (full := _disk_full(settings, error, "free space there")) is not None:
            raise UsageError(full) from None
        raise


def _first_given(*values: object) -> Any:
    return next((value for value in values if value is not None), None)


def _refiner_options(args: argparse.Namespace) -> dict[str, object]:
    """``--refiner`` and ``--refiner-switch`` as engine options (only those given)."""
    given = {"refiner": args.refiner, "refiner_switch": args.refiner_switch}
    return {name: value for name, value in given.items() if value is not None}


def _faces_options(args: argparse.Namespace) -> dict[str, object]:
    """``--faces-prompt``, ``--faces-strength`` and ``--faces-confidence`` as engine options
    (only those given; ``--faces`` / ``--restore-faces`` are flags typed in the prompt)."""
    from inference.face_options import FIX_FACES_CONFIDENCE, FIX_FACES_PROMPT, FIX_FACES_STRENGTH

    given = {
        FIX_FACES_PROMPT: args.faces_prompt,
        FIX_FACES_STRENGTH: args.faces_strength,
        FIX_FACES_CONFIDENCE: args.faces_confidence,
    }
    return {name: value for name, value in given.items() if value is not None}


def render_request(
    args: argparse.Namespace,
    base: RenderRequest | None = None,
    model_defaults: Callable[[str | None], Defaults] | None = None,
) -> RenderRequest:
    """``easel render``'s arguments as a checked request (no model, no torch); the options
    given override ``base`` (the settings of ``--infotext``). ``model_defaults``: what fills
    the steps, CFG and sampler nobody gave, by model (Flux schnell's 4 steps)."""
    from inference.control_units import with_control_units
    from inference.image_prompts import ImagePrompt, with_image_prompt
    from inference.images import load_input_image
    from inference.types import RenderInputError
    from inference.validation import validate_request

    if args.mask and not args.init_image:
        raise UsageError("--mask needs --init-image: the picture to inpaint")
    if args.strength is not None and not args.init_image:
        raise UsageError("--strength needs --init-image: the picture to redraw")
    base = base or RenderRequest("", seed=-1, variation_strength=0.0)
    base_size = None if base.width is None else f"{base.width}x{base.height}"
    try:
        request = build_request(
            ImagineOptions(
                prompt=args.prompt or base.prompt,
                negative=_first_given(args.negative, base.negative_prompt or None),
                seed=_first_given(args.seed, base.seed),
                steps=_first_given(args.steps, base.steps if base.prompt else None),
                cfg=_first_given(args.cfg, base.cfg_scale if base.prompt else None),
                sampler=args.sampler or (base.sampler if base.prompt else None),
                size=args.size or base_size,
                model=args.model or base.model,
                count=args.count,
                # Absent rather than False, so a --fast typed in the prompt still counts.
                fast=args.fast or base.fast or None,
                schedule_type=args.schedule_type,
            ),
            model_defaults=model_defaults,
        )
        variation_seed = _first_given(args.variation_seed, base.variation_seed)
        request = dataclasses.replace(
            request,
            variation_seed=(
                None if variation_seed is None else resolve_seed(variation_seed, "variation seed")
            ),
            variation_strength=_first_given(args.variation_strength, base.variation_strength),
            # Clip skip, hires fix, VAE... from the infotext; the size given may change.
            options={
                **base.options,
                **request.options,
                **_refiner_options(args),
                **_faces_options(args),
            },
            # A --sampler given names its schedule itself ("Euler Karras").
            schedule_type=(
                request.schedule_type if args.sampler or args.schedule_type else base.schedule_type
            ),
        )
        if args.init_image:
            load_input_image(args.init_image, f"--init-image {str(args.init_image)!r}")
            request = dataclasses.replace(
                request,
                mode="inpaint" if args.mask else "img2img",
                init_image=str(args.init_image),
                denoising_strength=_first_given(args.strength, IMG2IMG_STRENGTH),
            )
        if args.mask:
            load_input_image(args.mask, f"--mask {str(args.mask)!r}")
            request = dataclasses.replace(request, mask_image=str(args.mask))
        request = with_control_units(request, control_units_from_args(args))
        if args.sref:
            for picture in args.sref:
                load_input_image(picture, f"--sref {str(picture)!r}")
            prompt = ImagePrompt(tuple(map(str, args.sref)), args.sref_strength, args.sref_mode)
            request = with_image_prompt(request, prompt)
        elif args.sref_strength is not None:
            raise UsageError("--sref-strength needs --sref PATH: the picture to follow")
        validate_request(request)
    except (RequestError, RenderInputError, ControlUsageError) as error:
        raise UsageError(str(error)) from None
    return request


def upscale_request(args: argparse.Namespace, settings: Settings) -> RenderRequest:
    """``easel upscale``'s arguments as a checked request (no model, no torch)."""
    from inference.images import load_input_image
    from inference.not_installed import for_operator
    from inference.registry import ModelRegistry
    from inference.types import RenderInputError
    from inference.upscale import UpscaleOptions
    from inference.validation import validate_request

    options: dict[str, object] = {
        "upscale_factor": args.scale,
        "upscale_mode": args.mode,
        "upscale_strength": args.strength,
    }
    if args.upscaler:
        options["upscaler"] = args.upscaler
    try:
        picture = load_input_image(args.image, f"IMAGE {str(args.image)!r}")
        UpscaleOptions.from_options(options).output_size(*picture.size)
        registry = ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle)
        registry.resolve_upscaler(args.upscaler, settings.default_upscaler)
        request = RenderRequest(
            args.prompt,
            seed=resolve_seed(args.seed),
            steps=args.steps,
            model=args.model,
            mode="upscale",
            init_image=str(args.image),
            options=options,
        )
        validate_request(request)
    except RequestError as error:
        raise UsageError(str(error)) from None
    except RenderInputError as error:  # an unknown upscaler: the operator's words name those here
        raise UsageError(for_operator(error)) from None
    if args.mode == "creative":  # a diffusion re-detail: its model, refused before torch loads
        _check_models(request, settings, registry)
    return request


def infotext_settings(value: str, settings: Settings) -> RenderRequest:
    """``--infotext FILE|TEXT`` as a request; what cannot be honoured is a warning on stderr."""
    from bot.infotext_import import installed_in, request_from_infotext_text
    from inference.infotext import PNG_SIGNATURE, infotext_from_png
    from inference.registry import ModelRegistry

    path = Path(value)
    text = value
    if len(value) < _LONGEST_PATH and path.is_file():
        data = path.read_bytes()
        in_png = infotext_from_png(data) if data.startswith(PNG_SIGNATURE) else None
        if data.startswith(PNG_SIGNATURE) and in_png is None:
            raise UsageError(f"--infotext: {value!r} is a PNG that carries no parameters")
        text = in_png or data.decode("utf-8", errors="replace")
    registry = ModelRegistry(
        settings.models_dir,
        allow_pickle=settings.allow_pickle,
        hashes_file=settings.model_hashes_file,
    )
    installed = dataclasses.replace(
        installed_in(registry, settings.default_model),
        wildcards_dir=settings.existing_wildcards_dir,
    )
    try:
        imported = request_from_infotext_text(text, installed)
    except RequestError as error:
        raise UsageError(f"--infotext: {error}") from None
    for warning in imported.unhonoured:
        print(f"easel render: warning: {warning}", file=sys.stderr)
    return dataclasses.replace(imported.request, notes=[])


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    from inference.control_units import control_units
    from inference.image_prompts import check_image_prompt_fits, image_prompt
    from inference.not_installed import for_operator
    from inference.preprocessors import check_controls
    from inference.registry import ModelRegistry
    from inference.types import RenderInputError

    with _arguments_checked():
        base = None if args.infotext is None else infotext_settings(args.infotext, settings)
        request = render_request(args, base, _model_defaults(settings))
        registry = ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle)
        _check_models(request, settings, registry)
        units = control_units(request.options)
        try:
            check_controls_installed(units, registry)
            check_controls(units, registry)
            # As the bot checks before queueing: an adapter of the model's family, from headers.
            check_image_prompt_fits(
                image_prompt(request.options), registry, request.model, settings.default_model
            )
        except ControlUsageError as error:
            raise UsageError(str(error)) from None
        except RenderInputError as error:
            raise UsageError(for_operator(error)) from None
    return _render_and_write(request, settings, args.out)


@contextlib.contextmanager
def _arguments_checked() -> Iterator[None]:
    """The log lines said while the arguments are checked, shown once they pass; dropped when
    one is refused: its error line says what they would (the models installed, where an
    add-on goes), and the contract's bad argument is one line."""
    root = logging.getLogger()
    held = logging.handlers.BufferingHandler(capacity=sys.maxsize)
    handlers = root.handlers
    root.handlers = [held]
    try:
        yield
    finally:
        root.handlers = handlers
    for record in held.buffer:  # reached only when no argument was refused
        root.handle(record)


def _check_models(request: RenderRequest, settings: Settings, registry: ModelRegistry) -> None:
    """The model and refiner the render would load are installed here: refused before torch
    loads (seconds, not the half minute of the engine's start), naming the argument or
    setting and the models installed."""
    from bot.cli.models import model_problem

    if request.model:
        model: tuple[str | None, str] = (request.model, f"--model {request.model!r}")
    elif settings.default_model:
        model = (settings.default_model, f"EASEL_DEFAULT_MODEL={settings.default_model!r}")
    else:
        model = (None, "")
    named = [model]
    if refiner := request.options.get("refiner"):
        named.append((str(refiner), f"--refiner {str(refiner)!r}"))
    for name, given_as in named:
        if (problem := model_problem(registry, name, given_as)) is not None:
            raise UsageError(problem)


def _model_defaults(settings: Settings) -> Callable[[str | None], Defaults]:
    """The request defaults by model name, as the bot's: the model's family's, else the
    usual ones, under this setup's step ceiling."""
    from bot.services import model_defaults
    from inference.registry import ModelRegistry

    registry = ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle)
    max_steps = settings.render_limits.max_steps
    fallback = Defaults()
    return lambda model: model_defaults(
        registry, model, settings.default_model, fallback, max_steps
    )


def cmd_upscale(args: argparse.Namespace, settings: Settings) -> int:
    with _arguments_checked():
        request = upscale_request(args, settings)
    return _render_and_write(request, settings, args.out)


def _render_and_write(request: RenderRequest, settings: Settings, out: Path) -> int:
    """Render on the first device and print each PNG's path."""
    from bot.engines import engine_factory_for
    from inference.devices import resolve_devices
    from inference.not_installed import for_operator
    from inference.prompts import picture_seeds
    from inference.types import RenderInputError

    engine = engine_factory_for(settings)(resolve_devices(settings.devices)[0])
    try:
        images = engine.render(request)
    except RenderInputError as error:
        raise UsageError(for_operator(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        # A varied batch keeps one seed (``picture_seeds``): its variation seeds name apart.
        _, variation_seed = picture_seeds(
            request.seed, request.variation_seed, request.variation_strength, index
        )
        name = image.seed if variation_seed is None else f"{image.seed}-{variation_seed}"
        path = out / f"{name}.png"
        path.write_bytes(image.png)
        print(path)
    return 0


def _steps(text: str) -> int:
    """``--steps`` as a whole number (its range is checked with the settings: this says it
    when the text is no whole number at all, as argparse's ``invalid int value`` does not)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(out_of_range("steps", STEPS_ACCEPTS, text)) from None


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from inference.prompts import PromptError, explain

    try:
        seed = resolve_seed(args.seed)
    except RequestError as error:
        raise UsageError(str(error)) from None
    if not MIN_STEPS <= args.steps <= MAX_STEPS:
        raise UsageError(out_of_range("steps", STEPS_ACCEPTS, args.steps))
    from inference.registry import ModelRegistry

    # Installed LoRAs and embeddings by name, so unknown ones are listed in the warnings.
    registry = ModelRegistry(settings.models_dir)
    try:
        with _arguments_checked():  # a refused prompt's one line alone
            report = explain(
                args.prompt,
                args.negative,
                seed=seed,
                steps=args.steps,
                wildcards_dir=settings.existing_wildcards_dir,
                loras=registry.network_files("lora").keys(),
                embeddings=registry.network_files("embedding").keys(),
            )
    except PromptError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


# The tiny families with an inpainting model (SD3 and Flux inpaint as they are).
_INPAINTING_FAMILIES = ("sd15", "sdxl")


def cmd_tiny_model(args: argparse.Namespace, settings: Settings) -> int:
    if args.inpainting and args.family not in _INPAINTING_FAMILIES:
        raise UsageError(
            f"--inpainting: there is no inpainting {args.family} model; use --family "
            f"{' or '.join(_INPAINTING_FAMILIES)} (SD3 and Flux inpaint as they are)"
        )
    _tiny_folder(args.directory)
    try:
        print(_write_tiny(args))
    except (OSError, ValueError) as error:  # a full disk; a folder holding no model it reads
        raise UsageError(f"DIR {str(args.directory)!r}: {error}") from None
    return 0


def _tiny_folder(directory: Path) -> None:
    """Make ``easel tiny-model``'s DIR before torch loads, or say in one line why not."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"DIR {str(directory)!r} is a file: name a folder (made when missing)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = "" if error.filename is None else f"{os.fsdecode(error.filename)}: "
        raise UsageError(
            f"DIR {str(directory)!r} cannot be made ({where}{error.strerror or error})"
        ) from None


def _write_tiny(args: argparse.Namespace) -> Path:
    """What ``easel tiny-model`` asked for, written; the path it prints."""
    from inference.tiny import (
        write_tiny_controlnet,
        write_tiny_face_restorer,
        write_tiny_ip_adapter,
        write_tiny_model,
        write_tiny_upscaler,
    )

    if args.upscaler:
        return write_tiny_upscaler(args.directory, scale=args.upscaler)
    if args.faces:
        return write_tiny_face_restorer(args.directory)
    model: Path = args.directory
    if not (args.controlnet or args.ipadapter) or not (model / "model_index.json").is_file():
        model = write_tiny_model(args.directory, family=args.family, inpainting=args.inpainting)
    # The model's path, or else the last extra written for the model already there.
    path = model
    if args.controlnet:
        path = write_tiny_controlnet(model)
    if args.ipadapter:
        path = write_tiny_ip_adapter(model)
    return path


def cmd_doctor(_: argparse.Namespace, settings: Settings, malformed: Iterable[str] = ()) -> int:
    """Each check's line; exit 1 if any failed. ``malformed``: the lines of the settings that
    are (``SettingsError.malformed``), which the checks after them read as their defaults."""
    from bot.cli.doctor import Check, diagnose

    told = [Check("settings", False, f"{line} (read as its default below)") for line in malformed]
    problems = 0
    for check in itertools.chain(told, diagnose(settings)):
        mark = "ERR" if not check.ok else "WARN" if check.warning else "ok "
        print(redact_url(f"[{mark}] {check.name}: {check.detail}"))
        problems += not check.ok
    return 1 if problems else 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.restore import RestoreRefused, restore

    os.umask(PRIVATE_UMASK)  # the database put back, its -wal and easel.run: as a run makes them
    try:
        print(restore(args.backup_file, settings))
    except RestoreRefused as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # a full disk, a file this user may not replace
        where = "" if error.filename is None else f"{os.fsdecode(error.filename)}: "
        raise UsageError(f"{where}{error.strerror or error}") from None
    return 0


def cmd_health(_: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.health import check_health

    if settings.metrics_endpoint is None:
        raise UsageError("EASEL_METRICS_ADDR is empty: the health route lives on that server")
    healthy, detail = check_health(*settings.metrics_endpoint)
    print(detail)
    return 0 if healthy else 1


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": cmd_run,
    "worker": cmd_worker,
    "render": cmd_render,
    "upscale": cmd_upscale,
    "explain": cmd_explain,
    "tiny-model": cmd_tiny_model,
    "doctor": cmd_doctor,
    "health": cmd_health,
    "restore": cmd_restore,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    early_stop: EarlyStop | None = None,
    own_process: bool = False,
) -> int:
    """``early_stop``: ``easel run``'s or ``easel worker``'s, heard since the process began
    (``bot.cli.entry``); without it, they hear a stop signal from their command on.
    ``own_process``: the process is easel's (its entry points'), not a caller's that runs a
    command in it (a test's): ``easel run`` and ``easel worker`` set its limits (no core
    dumps, ``turn_off_core_dumps``), which last as long as it does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.early_stop = early_stop
    args.own_process = own_process
    if args.command == "render" and args.prompt is None and args.infotext is None:
        parser.error("the following arguments are required: prompt (or --infotext)")
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader gone (below) shows here, not as an error at exit
        return code
    except (SettingsError, UsageError) as error:
        if args.command != "doctor":  # which says them as its own lines
            # A misspelled name may be why it failed (EASEL_QUEUE_URLL): said before the
            # error, once (a no-op if said already), as a plain line where no logging is set up.
            warn_of_unknown_settings()
        print(redact_url(f"easel {args.command}: error: {error}"), file=sys.stderr)
        return SETTINGS_EXIT_STATUS  # a usage error's too, as argparse's own
    except BrokenPipeError:
        if args.command in SERVING_COMMANDS:  # one of its own sockets or pipes, not stdout's
            raise
        # The reader went away (`easel doctor | head -3`): it read what it wanted. Python
        # would flush again at exit and fail again: stdout leads nowhere from here on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    """The command, with the settings; ``easel doctor`` goes on past malformed settings (read
    as their defaults), each one of its checks' lines."""
    malformed: tuple[str, ...] = ()
    doctor = args.command == "doctor"
    try:
        settings = load_settings()
    except SettingsError as error:
        if not doctor or not error.malformed:
            raise
        settings = load_settings(as_defaults=error.malformed)
        malformed = tuple(error.malformed.values())
    if args.command in SERVING_COMMANDS and args.own_process:
        turn_off_core_dumps(keep=settings.keep_core_dumps)  # at once: the token is read
    # The long-running commands log as EASEL_LOG_FORMAT says; the others print what they found.
    if args.command not in SERVING_COMMANDS:
        if not logging.getLogger().handlers:
            # Warnings (a LoRA left out of a render, a model hidden by another) in the
            # operator's format, redacted; ``_arguments_checked`` keeps those a refusal
            # repeats off.
            install_logging(settings.log_format, settings.log_secrets, level=logging.WARNING)
        if not doctor:  # which says unknown settings among its checks
            warn_of_unknown_settings()
    if malformed:
        return cmd_doctor(args, settings, malformed)
    return COMMANDS[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main(own_process=True))

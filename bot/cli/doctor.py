"""``easel doctor``: each part of an installation checked, with the fix when it is wrong."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from bot.cli.models import model_problem
from bot.redaction import redact_url
from bot.settings import Settings, data_dir_problem, unknown_settings

if TYPE_CHECKING:  # the registry is imported where it is used, to keep start-up light
    from inference.memory import ModelMemory
    from inference.registry import ModelRegistry

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_COUNT_UNITS = ((10**9, "B"), (10**6, "M"), (10**3, "k"))
_SMALLER = "set EASEL_QUANTIZE=int8, use a GGUF file or set EASEL_CPU_OFFLOAD=1"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # Worth a look, yet no failure (``[WARN]``; ``ok`` is then True).
    warning: bool = False


def _broker_problem(url: str, timeout: float = 2.0) -> str | None:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 4222), timeout):
            return None
    except OSError as error:
        return redact_url(f"cannot reach {url}: {error.strerror or error}")


async def _database_version(settings: Settings) -> tuple[int, str | None]:
    """The database's schema version, and how it was read when not as usual."""
    # Read-only: a newer Easel's doctor run against the live volume must not upgrade it.
    from db.database import connect_read_only, schema_version

    conn, note = await connect_read_only(settings.database_path)
    try:
        return await schema_version(conn), note
    finally:
        await conn.close()


async def _stored_names_outside(settings: Settings) -> list[str]:
    """The file names the database stores that lie outside the data folder's ``images/`` and
    ``inputs/`` (``stored_file`` reads them as missing)."""
    from bot.jobs.stored_files import named_outside, plainly_inside
    from db.database import connect_read_only
    from db.history import stored_names_not_plainly_inside

    conn, _ = await connect_read_only(settings.database_path)
    try:
        names = await stored_names_not_plainly_inside(conn, plainly_inside)
    finally:
        await conn.close()
    return named_outside(settings.data_dir, names)


def _stored_names_check(settings: Settings) -> Check | None:
    """A warning where the database names stored files outside the data folder: a database
    tampered with, or one of another installation's whose paths its migration did not
    recognise."""
    try:
        outside = asyncio.run(_stored_names_outside(settings))
    except Exception as error:
        return Check("stored files", True, f"not read: {error}", warning=True)
    if not outside:
        return None
    return Check(
        "stored files",
        True,
        f"{len(outside)} stored file name{'s' * (len(outside) > 1)} in the database "
        f"lie outside {settings.data_dir}'s images/ and inputs/, read as missing files "
        f"(a database tampered with, or another installation's?), e.g. {outside[0]!r}",
        warning=True,
    )


def _database_checks(settings: Settings) -> Iterator[Check]:
    """The database's check, the copies of it an ``easel restore`` left beside it, and at the
    schema of now, the stored files' (``_stored_names_check``)."""
    from bot.restores import (
        damaged_database_problem,
        pictures_without_database_problem,
        restore_copies_problems,
    )
    from db.database import pending_migrations

    path = settings.database_path
    if (problem := data_dir_problem(settings.data_dir)) is not None:
        yield Check("database", False, problem)
        return
    for copy_left in restore_copies_problems(path):
        yield Check("restore copy", True, copy_left, warning=True)
    stored_dirs = (settings.images_dir, settings.inputs_dir)
    if (put_back := pictures_without_database_problem(path, stored_dirs)) is not None:
        yield Check("database", False, put_back)
        return
    if not path.exists():
        yield Check("database", True, f"{path} will be created at the first start")
        return
    try:
        version, note = asyncio.run(_database_version(settings))
        pending = len(pending_migrations(version))
    except Exception as error:
        yield Check("database", False, damaged_database_problem(path, error) or f"{path}: {error}")
        return
    noted = f" ({note})" if note is not None else ""
    if pending:
        yield Check(
            "database",
            True,
            f"{path} at schema {version}; {pending} migration{'s' * (pending > 1)} pending "
            f"(run `easel run` to apply; back up first){noted}",
        )
        return
    yield Check("database", True, f"{path} at schema version {version}{noted}")
    if (stored := _stored_names_check(settings)) is not None:
        yield stored


# Less free than this share of EASEL_DATA_DIR's disk is worth a warning, whatever its size.
LOW_FREE_SHARE = 0.05


def _data_disk_check(data_dir: Path) -> Check:
    """The bytes free on ``data_dir``'s disk (of its nearest folder that exists, before the
    first start), always; a warning when below what a start needs (``START_ROOM_BYTES``) or
    under ``LOW_FREE_SHARE`` of the disk: pictures and the database stop being written when
    it is full."""
    from bot.jobs.retention import START_ROOM_BYTES

    try:
        folder = next((at for at in (data_dir, *data_dir.parents) if at.is_dir()), data_dir)
        usage = shutil.disk_usage(folder)
    except OSError as error:
        return Check("data disk", True, f"{data_dir}: free space not read: {error}", warning=True)
    share = usage.free / usage.total if usage.total else 0.0
    detail = f"{_bytes(usage.free)} free of {_bytes(usage.total)} ({share:.1%}) on {data_dir}"
    if usage.free >= START_ROOM_BYTES and share >= LOW_FREE_SHARE:
        return Check("data disk", True, detail)
    return Check(
        "data disk",
        True,
        f"{detail}: low (a start needs {_bytes(START_ROOM_BYTES)}; pictures and the database "
        "are not written once it is full): free some space or move EASEL_DATA_DIR",
        warning=True,
    )


def _upscalers_check(registry: ModelRegistry, default: str | None, hires: str) -> Check:
    """Lanczos always works; model upscalers are listed, pickles left out are named, and the
    default and the hires fix's upscaler must be installed."""
    from inference.registry import pickles_left_out
    from inference.types import RenderInputError
    from inference.upscale import latent_upscaler

    def refused(setting: str, error: RenderInputError, also: str = "") -> Check:
        installed = ", ".join(registry.upscaler_names())
        return Check("upscalers", False, f"{setting}: {error}; installed: {installed}{also}")

    try:
        default_name = registry.resolve_upscaler(None, default)[0]
    except RenderInputError as error:
        return refused("EASEL_DEFAULT_UPSCALER", error)
    if latent_upscaler(hires) is None:
        try:
            registry.resolve_upscaler(hires)
        except RenderInputError as error:
            return refused("EASEL_HIRES_UPSCALER", error, " (or Latent)")
    detail = f"{', '.join(registry.upscaler_names())}; default {default_name}"
    if not registry.allow_pickle:
        pickled = registry.pickled_upscaler_files()
        if pickled:
            detail += f" ({pickles_left_out(pickled.values())})"
    return Check("upscalers", True, detail)


def _faces_check(registry: ModelRegistry) -> Check:
    """The detector fix faces uses (tried on a blank picture, so a broken file shows here)
    and the face restorers installed (none is fine: only face restoration needs one)."""
    from PIL import Image

    from inference.faces import FACE_DETECTOR_FOLDER, face_detector
    from inference.registry import FACE_RESTORER_FOLDERS
    from inference.types import RenderInputError

    detector = face_detector(registry.models_dir)
    try:
        detector.detect(Image.new("RGB", (64, 64)))
    except RenderInputError as error:
        return Check("faces", False, str(error))
    if detector.path is None:
        found = (
            f"OpenCV's Haar cascade (a YuNet .onnx in models/{FACE_DETECTOR_FOLDER}/ "
            "detects better)"
        )
    else:
        found = f"YuNet {detector.path.name}"
    restorers = ", ".join(sorted(registry.face_restorer_files(), key=str.casefold)) or (
        f"none (face restoration needs a GFPGAN or RestoreFormer .safetensors in "
        f"models/{FACE_RESTORER_FOLDERS[0]}/)"
    )
    return Check("faces", True, f"detector: {found}; restorers: {restorers}")


def _addons_check(registry: ModelRegistry) -> Check:
    """The ControlNets, IP-Adapters and CLIPSeg model installed, and where each missing one
    goes (a member is told only that it is not installed; none is fine: only the commands
    that use one need it)."""
    from inference.control_units import controlnet_files, controlnet_install_hint
    from inference.image_prompts import adapter_files, adapter_install_hint
    from inference.segment import missing_model_sentence

    models_dir = registry.models_dir
    controlnets = ", ".join(sorted(controlnet_files(registry), key=str.casefold))
    adapters = ", ".join(sorted(adapter_files(registry), key=str.casefold))
    clipseg = missing_model_sentence(models_dir)
    return Check(
        "add-ons",
        True,
        f"ControlNet: {controlnets or f'none ({controlnet_install_hint(models_dir)})'}; "
        f"IP-Adapter: {adapters or f'none ({adapter_install_hint(models_dir)})'}; "
        f"CLIPSeg: {'installed' if clipseg is None else f'none ({clipseg})'}",
    )


def _wildcard_checks(settings: Settings) -> Iterator[Check]:
    """The wildcards the folder offers, and each file left out with why: one past a bound
    (too big, YAML aliases, too many wildcards) or that cannot be read; a member naming one
    of its wildcards is told it is unknown."""
    from inference.prompts import WildcardLibrary

    folder = settings.existing_wildcards_dir
    if folder is None:
        yield Check("wildcards", True, f"no folder at {settings.wildcards_dir}: none offered")
        return
    library = WildcardLibrary(folder)
    yield Check("wildcards", True, f"{len(library.names())} in {folder}")
    for path, reason in library.files_left_out().items():
        yield Check(f"wildcard file {path}", False, f"left out: {reason}")


def _bytes(count: int) -> str:
    """``count`` bytes as people read them: ``1.6 GiB``."""
    value = float(count)
    for unit in _BYTE_UNITS:
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _count(parameters: int) -> str:
    """A parameter count as people say it: ``860M``, ``2.6B``."""
    for size, unit in _COUNT_UNITS:
        if parameters >= size:
            return f"{parameters / size:.3g}{unit}"
    return str(parameters)


def _memory_detail(memory: ModelMemory, dtype: str, quantize: str) -> str:
    parts = ", ".join(
        f"{c.name} {_bytes(c.stored_bytes)} ({_count(c.parameters)} parameters)"
        for c in memory.components
    )
    unread = f"; not read: {', '.join(memory.unread)}" if memory.unread else ""
    quantized = "" if quantize == "off" else f", denoiser {quantize}"
    side = memory.native_side
    return (
        f"{parts}{unread}; {_bytes(memory.weight_bytes)} in {dtype}{quantized}; peak about "
        f"{_bytes(memory.peak_bytes)} for a 2x2 grid at {side}x{side}"
    )


def _memory_checks(
    settings: Settings, registry: ModelRegistry, devices: tuple[str, ...]
) -> Iterator[Check]:
    """Each model's weights per component (from file headers), at the dtype it runs in, its
    estimated peak for one 2x2 grid (``inference.memory``), and whether that fits each GPU."""
    from inference.checkpoints import split_part_files
    from inference.devices import default_dtype, free_device_bytes
    from inference.memory import gguf_quantization, model_memory
    from inference.not_installed import for_operator
    from inference.types import RenderInputError

    dtype = default_dtype(devices[0])
    free = {d: b for d in devices if (b := free_device_bytes(d)) is not None}
    for name, entry in sorted(registry.loadable().items()):
        try:
            # A split release's transformer counts with the parts its loading would read.
            parts = split_part_files(entry)
            memory = model_memory(entry, dtype.itemsize, settings.quantize != "off", parts)
            gguf = gguf_quantization(entry)
        except RenderInputError as error:
            yield Check(f"memory {name}", False, for_operator(error))
            continue
        except (OSError, ValueError, KeyError, RecursionError) as error:  # a hostile config
            yield Check(f"memory {name}", False, f"cannot read {entry.path.name}: {error}")
            continue
        detail = _memory_detail(memory, str(dtype).removeprefix("torch."), settings.quantize)
        detail += "" if gguf is None else f"; denoiser GGUF {gguf}"
        if not free:
            yield Check(f"memory {name}", True, f"{detail}; CPU")
            continue
        too_small = [d for d, b in free.items() if b < memory.peak_bytes]
        room = ", ".join(f"{d} {_bytes(b)} free" for d, b in free.items())
        if not too_small or settings.cpu_offload:
            offload = " (EASEL_CPU_OFFLOAD=1: parts move to the GPU in turn)"
            fits = f"fits: {room}{offload if too_small else ''}"
            yield Check(f"memory {name}", True, f"{detail}; {fits}")
        else:
            yield Check(
                f"memory {name}",
                False,
                f"{detail}; does not fit {', '.join(too_small)} ({room}): {_SMALLER}",
            )


def _no_models(models_dir: Path) -> str:
    """Why no model is offered from ``models_dir`` (``EASEL_MODELS_DIR``), and the fix."""
    try_out = f"run `easel tiny-model {models_dir / 'tiny'}` to try Easel out"
    if not models_dir.exists():
        return (
            f"EASEL_MODELS_DIR={models_dir} does not exist: set it to the folder holding your "
            f"checkpoints (or {try_out})"
        )
    if not models_dir.is_dir():
        return (
            f"EASEL_MODELS_DIR={models_dir} is a file, not a folder: set it to the folder "
            "holding your checkpoints"
        )
    return (
        f"no checkpoint in {models_dir}: copy .safetensors files or diffusers folders there "
        f"(or {try_out})"
    )


def _captioner_check(folder: Path | None) -> Check:
    """Whether ``EASEL_CAPTIONER_DIR`` holds the BLIP model ``/describe`` loads (unset is
    fine: /describe then says it is not set up)."""
    if folder is None:
        return Check("captioner", True, "none (/describe is off: EASEL_CAPTIONER_DIR is empty)")
    from inference.describe import captioner_problem

    problem = captioner_problem(folder)
    return Check("captioner", problem is None, problem or f"BLIP in {folder}")


def _running_check(host: str, port: int) -> Check:
    """What the running bot's (or worker's) /healthz says, as `easel health` reads it: it may
    have lost what a fresh process checks sound here (a device's CUDA context). None
    answering is a note: doctor is run before a start too."""
    from bot.cli.health import ask_health

    status, said = ask_health(host, port, timeout_s=2.0)
    if status is None:
        return Check("running Easel", True, f"not running, or not answering: {said}")
    return Check("running Easel", status == 200, said)


def diagnose(settings: Settings) -> Iterator[Check]:
    if settings.discord_token:
        yield Check("settings", True, "DISCORD_TOKEN is set")
    else:
        yield Check(
            "settings", False, "DISCORD_TOKEN is not set: add it to .env (see .env.example)"
        )
    for line in unknown_settings().values():
        yield Check("settings", True, line, warning=True)

    from inference.devices import device_problem, resolve_devices
    from inference.quantization import quantize_problem

    devices = resolve_devices(settings.devices)
    for device in devices:
        problem = device_problem(device)
        yield Check(f"device {device}", problem is None, problem or "usable")
        if problem is None and settings.quantize != "off":
            problem = quantize_problem(settings.quantize, device)
            yield Check(f"quantize {device}", problem is None, problem or settings.quantize)

    from inference.registry import ModelRegistry, pickles_left_out

    registry = ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle)
    models = registry.names()
    if models:
        yield Check("models", True, f"{len(models)} in {settings.models_dir}: {', '.join(models)}")
    else:
        yield Check("models", False, _no_models(settings.models_dir))
    if pickled := registry.refused_pickles():
        yield Check("models", True, pickles_left_out(pickled), warning=True)
    for name, where in sorted(registry.misplaced().items()):
        yield Check(f"model {name}", False, f"not offered: {where}")
    for name, problem in sorted(registry.unusable().items()):
        yield Check(
            f"model {name}",
            False,
            f"not offered: {problem} (a file is offered once whole: copy it elsewhere on the "
            "same disk, then move it in)",
        )
    if settings.default_model is not None:
        default = settings.default_model
        # Else every request naming no model is refused, in words naming a model its member
        # never typed.
        problem = model_problem(registry, default, f"EASEL_DEFAULT_MODEL={default!r}")
        yield Check("default model", problem is None, problem or default)

    yield from _memory_checks(settings, registry, devices)
    yield _upscalers_check(registry, settings.default_upscaler, settings.hires_upscaler)
    yield _faces_check(registry)
    yield _addons_check(registry)
    yield _captioner_check(settings.captioner_dir)
    yield from _wildcard_checks(settings)
    yield from _database_checks(settings)
    yield _data_disk_check(settings.data_dir)

    if settings.queue_url:
        problem = _broker_problem(settings.queue_url)
        reachable = f"{redact_url(settings.queue_url)} reachable"
        yield Check("broker", problem is None, problem or reachable)
    else:
        yield Check("broker", True, "in-process queue (EASEL_QUEUE_URL is empty)")
    if settings.metrics_endpoint is not None:
        yield _running_check(*settings.metrics_endpoint)

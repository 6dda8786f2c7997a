"""``easel doctor``: each part of an installation checked, with the fix when it is wrong."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from bot.redaction import redact_url
from bot.settings import Settings

if TYPE_CHECKING:  # the registry is imported where it is used, to keep start-up light
    from inference.registry import ModelRegistry


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _broker_problem(url: str, timeout: float = 2.0) -> str | None:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "", parsed.port or 4222), timeout):
            return None
    except OSError as error:
        return redact_url(f"cannot reach {url}: {error.strerror or error}")


async def _database_version(settings: Settings) -> int:
    from db.database import connect, schema_version

    conn = await connect(settings.database_path)
    try:
        return await schema_version(conn)
    finally:
        await conn.close()


def _database_check(settings: Settings) -> Check:
    path = settings.database_path
    if not path.exists():
        folder = next((p for p in (path, *path.parents) if p.exists()), Path())
        if os.access(folder, os.W_OK):
            return Check("database", True, f"{path} will be created at the first start")
        return Check("database", False, f"{folder} is not writable: fix EASEL_DATA_DIR")
    try:
        version = asyncio.run(_database_version(settings))
    except Exception as error:
        return Check("database", False, f"{path}: {error}")
    return Check("database", True, f"{path} at schema version {version}")


def _upscalers_check(registry: ModelRegistry, default: str | None, hires: str) -> Check:
    """Lanczos always works; model upscalers are listed, pickles left out are named, and the
    default and the hires fix's upscaler must be installed."""
    from inference.types import RenderInputError
    from inference.upscale import latent_upscaler

    try:
        default_name = registry.resolve_upscaler(None, default)[0]
    except RenderInputError as error:
        return Check("upscalers", False, f"EASEL_DEFAULT_UPSCALER: {error}")
    if latent_upscaler(hires) is None:
        try:
            registry.resolve_upscaler(hires)
        except RenderInputError as error:
            return Check("upscalers", False, f"EASEL_HIRES_UPSCALER: {error} (or Latent)")
    detail = f"{', '.join(registry.upscaler_names())}; default {default_name}"
    if not registry.allow_pickle:
        pickled = registry.pickled_upscaler_files()
        if pickled:
            detail += (
                f" (left out, pickle files: {', '.join(sorted(p.name for p in pickled.values()))}"
                "; convert them to .safetensors or set EASEL_ALLOW_PICKLE=1)"
            )
    return Check("upscalers", True, detail)


def diagnose(settings: Settings) -> Iterator[Check]:
    if settings.discord_token:
        yield Check("settings", True, "DISCORD_TOKEN is set")
    else:
        yield Check(
            "settings", False, "DISCORD_TOKEN is not set: add it to .env (see .env.example)"
        )

    from inference.devices import device_problem, resolve_devices

    for device in resolve_devices(settings.devices):
        problem = device_problem(device)
        yield Check(f"device {device}", problem is None, problem or "usable")

    from inference.registry import ModelRegistry

    registry = ModelRegistry(settings.models_dir, allow_pickle=settings.allow_pickle)
    models = registry.names()
    if models:
        yield Check("models", True, f"{len(models)} in {settings.models_dir}: {', '.join(models)}")
    else:
        yield Check(
            "models",
            False,
            f"no checkpoint in {settings.models_dir}: copy .safetensors files or diffusers folders "
            "there (or run `easel tiny-model models/tiny` to try Easel out)",
        )

    yield _upscalers_check(registry, settings.default_upscaler, settings.hires_upscaler)
    yield _database_check(settings)

    if settings.queue_url:
        problem = _broker_problem(settings.queue_url)
        reachable = f"{redact_url(settings.queue_url)} reachable"
        yield Check("broker", problem is None, problem or reachable)
    else:
        yield Check("broker", True, "in-process queue (EASEL_QUEUE_URL is empty)")

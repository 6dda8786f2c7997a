"""The one settings object: environment variables, or a ``.env`` file in the working directory."""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Collection
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Le
from dotenv import dotenv_values
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.jobs.scheduler import Fairness
from bot.policy.moderation import read_banned_words
from bot.policy.quota import QuotaLimits
from bot.redaction import redact_url
from inference.file_hashes import HASHES_FILE
from inference.limits import MAX_SIZE, MAX_STEPS, MIN_SIZE, MIN_STEPS
from inference.names import as_typed
from inference.quantization import Quantize
from inference.upscale import latent_upscaler
from inference.validation import RenderLimits

log = logging.getLogger(__name__)

# Where the settings are read from beside the environment: the working directory's .env.
ENV_FILE = Path(".env")
# The database's file in EASEL_DATA_DIR (``Settings.database_path``; ``bot.restores`` syncs it).
DATABASE_FILE_NAME = "easel.sqlite3"
# EASEL_ names that are not settings but that Easel's own files read: docker-compose.yml's
# mounts, deploy/nats-server.conf's passwords, the tests' and CI's switches. Not warned of.
_OTHER_EASEL_NAMES = re.compile(
    r"EASEL_(MODELS_PATH|WILDCARDS_PATH|NATS_BOT_PASSWORD|NATS_WORKER_\w+_PASSWORD"
    r"|HYPOTHESIS_PROFILE|CI_UPGRADES|CI_UPGRADES_VENV)"
)
# The unknown names already warned of, so a second read of the settings says each once.
_UNKNOWN_TOLD: set[str] = set()

# Discord's own endpoints; bot.discord_endpoints points discord.py elsewhere (a proxy, the tests'
# fake) when these are changed. Kept here so that loading the settings never imports discord.
DISCORD_API_BASE_DEFAULT = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL_DEFAULT = "wss://gateway.discord.gg/"


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it and says what is accepted.
    ``malformed``: each malformed setting's name and line (``load_settings``; the message is
    the first line)."""

    def __init__(self, message: str, malformed: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.malformed = malformed or {}


# The spellings of EASEL_COMPILE and EASEL_WARM_START: auto, and the words pydantic reads as
# booleans for the on/off settings (EASEL_CUDA_GRAPHS=true), so that all take one set (the
# interface's 1 and 0, the README's on and off).
_SWITCH_CHOICES = {
    "auto": "auto",
    **dict.fromkeys(("on", "1", "true", "yes"), "on"),
    **dict.fromkeys(("off", "0", "false", "no"), "off"),
}
# The web pages' usual port (EASEL_WEB_ADDR), as the metrics' is 9100.
WEB_PORT = 8080


def data_dir_problem(data_dir: Path) -> str | None:
    """Why Easel could not keep its database and pictures in ``data_dir``, or None; creates
    nothing (the folder, or the first of its parents that exists, must be a writable folder)."""
    # os.path.exists, not Path.exists: False (rather than PermissionError) under a folder this
    # user cannot enter, so that folder is the one checked and named.
    candidates = (data_dir, *data_dir.parents)
    existing = next((p for p in candidates if os.path.exists(p)), Path.cwd())  # noqa: PTH110
    setting = f"EASEL_DATA_DIR={str(data_dir)!r}"
    if not existing.is_dir():
        return f"{setting}: {existing} is a file, not a folder"
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{setting}: {existing} is on a read-only mount; mount it read-write"
    return (
        f"{setting}: this user (uid {os.getuid()}) cannot enter or write to {existing}; "
        "give it to that user or choose another folder"
    )


def _comma_separated(value: str) -> list[str]:
    """A setting's comma-separated list, each part stripped, empty ones left out."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _is_server_id(text: str) -> bool:
    # ASCII digits only: int() would also read other scripts' digits (and a superscript fails).
    return text.isascii() and text.isdigit()


def split_host_port(address: str, example_port: int = 9100) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6; port 0: any free one) as a pair; the error
    gives examples on ``example_port`` (the setting's usual one)."""
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"must be host:port, e.g. 0.0.0.0:{example_port} or 127.0.0.1:{example_port} "
            "(port 0-65535)"
        )
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Secrets (the token, a queue URL's credentials) stay out of the settings' repr.
    discord_token: str = Field(default="", repr=False, validation_alias="DISCORD_TOKEN")
    discord_api_base: str = Field(
        default=DISCORD_API_BASE_DEFAULT, validation_alias="DISCORD_API_BASE"
    )
    discord_gateway_url: str = Field(
        default=DISCORD_GATEWAY_URL_DEFAULT, validation_alias="DISCORD_GATEWAY_URL"
    )
    dev_guild_id: int | None = Field(default=None, validation_alias="EASEL_DEV_GUILD_ID")
    data_dir: Path = Field(default=Path("data"), validation_alias="EASEL_DATA_DIR")
    models_dir: Path = Field(default=Path("models"), validation_alias="EASEL_MODELS_DIR")
    wildcards_dir: Path = Field(default=Path("wildcards"), validation_alias="EASEL_WILDCARDS_DIR")
    default_model: str | None = Field(default=None, validation_alias="EASEL_DEFAULT_MODEL")
    # What /upscale uses when no upscaler is named; None: the first model upscaler, else Lanczos.
    default_upscaler: str | None = Field(default=None, validation_alias="EASEL_DEFAULT_UPSCALER")
    # The upscaler of /imagine's hires fix: Lanczos, a Latent variant or a model upscaler.
    hires_upscaler: str = Field(
        default="Lanczos", min_length=1, validation_alias="EASEL_HIRES_UPSCALER"
    )
    # A local BLIP captioning model folder for /describe (None: /describe is off).
    captioner_dir: Path | None = Field(default=None, validation_alias="EASEL_CAPTIONER_DIR")
    # Pickle files (.ckpt, .pt, .pth) can run code when loaded: off unless an admin trusts them.
    allow_pickle: bool = Field(default=False, validation_alias="EASEL_ALLOW_PICKLE")
    # This server's ceilings, below the hard ranges: pixels per picture and sampling steps.
    max_pixels: int = Field(
        default=MAX_SIZE * MAX_SIZE,
        ge=MIN_SIZE * MIN_SIZE,
        le=MAX_SIZE * MAX_SIZE,
        validation_alias="EASEL_MAX_PIXELS",
    )
    max_steps: int = Field(
        default=MAX_STEPS, ge=MIN_STEPS, le=MAX_STEPS, validation_alias="EASEL_MAX_STEPS"
    )
    # 0: one model per device at a time. Above 0: recently used models stay loaded while their
    # weights fit in this many GB per device (the one in use always stays).
    model_cache_gb: float = Field(default=0, ge=0, le=4096, validation_alias="EASEL_MODEL_CACHE_GB")
    # Keep each model part in CPU memory until the pipeline needs it: slower, fits small GPUs.
    cpu_offload: bool = Field(default=False, validation_alias="EASEL_CPU_OFFLOAD")
    # Quantize each model's UNet or transformer, and T5, as it loads (torchao): int8 on any
    # device, fp8 on CUDA of compute capability 8.9+. GGUF files come quantized already.
    quantize: Quantize = Field(default="off", validation_alias="EASEL_QUANTIZE")
    # torch.compile of each model's UNet and VAE decoder (inference.compile); 1 and 0 mean on
    # and off. auto: off for now, since on an H200 the compiled engine ran 0.90x the eager one
    # (docs/performance.md).
    compile: Literal["auto", "on", "off"] = Field(default="auto", validation_alias="EASEL_COMPILE")
    # How: inductor's default mode, or reduce-overhead (CUDA graphs replayed for each shape).
    compile_mode: Literal["default", "reduce-overhead"] = Field(
        default="default", validation_alias="EASEL_COMPILE_MODE"
    )
    # Record each model's UNet calls as CUDA graphs and replay them (inference.cuda_graphs):
    # CUDA devices only, not with EASEL_COMPILE=on or EASEL_CPU_OFFLOAD.
    cuda_graphs: bool = Field(default=True, validation_alias="EASEL_CUDA_GRAPHS")
    # Load the default model and render one throw-away step on each device when the queue
    # starts, before the first job. auto: on for CUDA devices, off on the CPU.
    warm_start: Literal["auto", "on", "off"] = Field(
        default="auto", validation_alias="EASEL_WARM_START"
    )
    # Empty means "every CUDA device, else cpu"; resolved by inference.devices at start-up.
    devices: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias="EASEL_DEVICES"
    )
    queue_url: str = Field(default="", repr=False, validation_alias="EASEL_QUEUE_URL")
    # With a broker: how many jobs the bot keeps in flight on it at once.
    remote_slots: int = Field(default=8, ge=1, le=1024, validation_alias="EASEL_REMOTE_SLOTS")
    # Days a delivered result (journal row, pictures, uploads, settled ledger rows) is kept;
    # 0 keeps them forever.
    retention_days: int = Field(default=30, ge=0, le=36500, validation_alias="EASEL_RETENTION_DAYS")
    # Jobs a member may have waiting or running in one server (or their DMs), admins too:
    # a quota bounds spending, not the queue (each job a row, its uploads, scheduling work).
    # 0: no bound.
    max_queued_per_member: int = Field(
        default=20, ge=0, le=100_000, validation_alias="EASEL_MAX_QUEUED_PER_MEMBER"
    )
    # Servers whose priority roles put their members ahead of other servers' jobs too (server
    # ids, comma-separated): the operator's call, never a server admin's. Elsewhere a priority
    # role orders its own server's jobs only.
    priority_servers: Annotated[frozenset[int], NoDecode] = Field(
        default=frozenset(), validation_alias="EASEL_PRIORITY_SERVERS"
    )
    # Between whom the queue is fair first: members (each member's fair share of device time,
    # whatever their server) or servers (servers take turns, then members within each).
    fairness: Fairness = Field(default="members", validation_alias="EASEL_FAIRNESS")
    # The servers Easel serves (server ids, comma-separated); empty: every server it is in.
    # Elsewhere every command and click is refused, and a server adding it is left at once.
    allowed_servers: Annotated[frozenset[int], NoDecode] = Field(
        default=frozenset(), validation_alias="EASEL_ALLOWED_SERVERS"
    )
    # Commands in direct messages with the bot. A DM belongs to no server, so no server's
    # rules or admins reach it: off unless the operator turns it on; then the DM quota below
    # and the rules a server has before its admins change any apply.
    allow_dms: bool = Field(default=False, validation_alias="EASEL_ALLOW_DMS")
    # With DMs on: pictures a member may make a day there. No server admin can change it.
    dm_images_per_day: int = Field(
        default=20, ge=0, le=1_000_000, validation_alias="EASEL_DM_IMAGES_PER_DAY"
    )
    # Words and phrases refused in every server and in direct messages, on top of each
    # server's own (a UTF-8 file, one a line, # comments); read at start.
    operator_banned_words: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), repr=False, validation_alias="EASEL_BANNED_WORDS_FILE"
    )
    # host:port of the Prometheus /metrics and /healthz server; empty: no server.
    metrics_addr: str = Field(default="", validation_alias="EASEL_METRICS_ADDR")
    # text for people, json for log collectors (one object a line).
    log_format: Literal["text", "json"] = Field(default="text", validation_alias="EASEL_LOG_FORMAT")
    # Let `easel run` and `easel worker` write core dumps, for debugging a crash: one holds
    # the token and members' prompts, so they are off unless the operator asks.
    keep_core_dumps: bool = Field(default=False, validation_alias="EASEL_KEEP_CORE_DUMPS")
    # Where members open the Vary (Region) mask editor (as they see it, e.g. behind a reverse
    # proxy); empty: no web server, regions are described in words only.
    public_url: str = Field(default="", validation_alias="EASEL_PUBLIC_URL")
    # host:port the mask editor's web server listens on (when EASEL_PUBLIC_URL is set).
    web_addr: str = Field(default=f"127.0.0.1:{WEB_PORT}", validation_alias="EASEL_WEB_ADDR")
    # Signs the editor's links; empty: a random one kept in EASEL_DATA_DIR/web-secret.
    web_secret: str = Field(default="", repr=False, validation_alias="EASEL_WEB_SECRET")
    # Reverse proxies on other hosts or containers (addresses or CIDRs, comma-separated): their
    # connections are held to the web server's total cap only, like loopback's.
    web_trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = Field(
        default=(), validation_alias="EASEL_WEB_TRUSTED_PROXIES"
    )

    @field_validator(
        "dev_guild_id", "default_model", "default_upscaler", "captioner_dir", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("default_model", "default_upscaler", "hires_upscaler")
    @classmethod
    def _as_typed(cls, value: str | None) -> str | None:
        # A name pasted from a macOS listing may be NFD; Easel names files in NFC.
        return None if value is None else as_typed(value)

    @field_validator("default_upscaler")
    @classmethod
    def _check_default_upscaler(cls, value: str | None) -> str | None:
        # A latent upscaler enlarges a hires fix's latents, never a picture: as /upscale's
        # default every upscale naming none would fail, so it is refused before the start.
        if value is not None and latent_upscaler(value) is not None:
            raise ValueError(
                "a latent upscaler enlarges only /imagine's hires fix (set it as "
                "EASEL_HIRES_UPSCALER); give Lanczos or an installed model upscaler's name, "
                "or leave it empty for the first model upscaler"
            )
        return value

    @field_validator("operator_banned_words", mode="before")
    @classmethod
    def _read_banned_words(cls, value: object) -> object:
        if not isinstance(value, str | Path):
            return value
        if value == "":
            return frozenset()
        try:
            # utf-8-sig: a byte-order mark (Windows editors) is not part of the first word.
            text = Path(value).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(
                f"cannot read it as a UTF-8 text file ({error.__class__.__name__}); give the path "
                "of a file with one banned word or phrase a line, or leave it empty"
            ) from None
        return read_banned_words(text)

    @field_validator("metrics_addr")
    @classmethod
    def _check_metrics_addr(cls, value: str) -> str:
        if value:
            split_host_port(value)
        return value

    @field_validator("web_addr")
    @classmethod
    def _check_web_addr(cls, value: str) -> str:
        split_host_port(value, WEB_PORT)
        return value

    @field_validator("dev_guild_id", mode="before")
    @classmethod
    def _check_guild_id(cls, value: object) -> object:
        if isinstance(value, str) and value.strip() and not _is_server_id(value.strip()):
            raise ValueError(
                "must be a server id, its digits only (in Discord, turn on Developer Mode, then "
                "right-click the server: Copy Server ID), or empty to register commands globally"
            )
        return value

    @field_validator("priority_servers", "allowed_servers", mode="before")
    @classmethod
    def _split_server_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        ids = set()
        for part in _comma_separated(value):
            if not _is_server_id(part):
                raise ValueError(
                    f"{part!r} is not a server id; use server ids, digits only (in Discord, turn "
                    "on Developer Mode, then right-click the server: Copy Server ID), "
                    "comma-separated"
                )
            ids.add(int(part))
        return frozenset(ids)

    @field_validator("allowed_servers")
    @classmethod
    def _check_dev_guild_served(cls, value: frozenset[int], info: ValidationInfo) -> frozenset[int]:
        # The commands registered to a server Easel refuses would answer nothing else there.
        dev_guild_id = info.data.get("dev_guild_id")  # absent: itself malformed, named so
        if value and dev_guild_id is not None and dev_guild_id not in value:
            raise ValueError(
                f"it leaves out EASEL_DEV_GUILD_ID={dev_guild_id}, the one server the commands "
                "are registered to, where every one of them would be refused; add that id to "
                "EASEL_ALLOWED_SERVERS, or set EASEL_DEV_GUILD_ID to a listed server (or empty)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty (no mask editor) or an http(s) URL members can open")
        return value.rstrip("/")

    @field_validator("compile_mode", "log_format", "quantize", "fairness", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # Defined after ``_lower_choice``, so it runs around it (pydantic runs wrap and before
    # validators last defined first): it sees the choice lowered, and refuses it in words.
    @field_validator("fairness", mode="wrap")
    @classmethod
    def _explain_fairness(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(
                "must be members (each member a fair share, whatever their server) or servers "
                "(servers take turns first, then members within each)"
            ) from None

    @field_validator("compile", "warm_start", mode="before")
    @classmethod
    def _switch_choice(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if (choice := _SWITCH_CHOICES.get(value.strip().lower())) is None:
            raise ValueError("must be auto, on (or 1, true, yes) or off (or 0, false, no)")
        return choice

    @field_validator("devices", mode="before")
    @classmethod
    def _split_devices(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(_comma_separated(value))
        return value

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for device in value:
            kind, _, index = device.partition(":")
            if kind not in {"cpu", "cuda", "mps", "xpu"} or (index and not index.isdigit()):
                raise ValueError(
                    f"{device!r} is not a device; use cpu, cuda, cuda:N, mps or xpu:N, "
                    "comma-separated"
                )
        return value

    @field_validator("web_trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        networks = []
        for part in _comma_separated(value):
            try:
                network = ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or network; use addresses or CIDRs such as "
                    "172.18.0.1 or 10.0.0.0/8, comma-separated"
                ) from None
            # Peers are compared as IPv4 when IPv4-mapped, so an IPv4-mapped entry would never
            # match: refused rather than silently never used.
            if network.version == 6 and network.network_address.ipv4_mapped is not None:
                raise ValueError(
                    f"{part!r} is an IPv4-mapped IPv6 address; write it as IPv4 "
                    f"({network.network_address.ipv4_mapped})"
                )
            networks.append(network)
        return tuple(networks)

    @field_validator("discord_api_base")
    @classmethod
    def _check_api_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://discord.com/api/v10")
        return value

    @field_validator("discord_gateway_url")
    @classmethod
    def _check_gateway(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws(s) URL such as wss://gateway.discord.gg/")
        return value

    @field_validator("queue_url")
    @classmethod
    def _check_queue_url(cls, value: str) -> str:
        if value and not value.startswith(("nats://", "tls://")):
            raise ValueError("must be empty (in-process queue) or a nats:// or tls:// URL")
        return value

    @property
    def log_secrets(self) -> tuple[str, ...]:
        """Values no log line may show (URL credentials are hidden wherever they appear)."""
        return (self.discord_token, self.web_secret)

    @property
    def metrics_endpoint(self) -> tuple[str, int] | None:
        """Where the metrics server listens, or None when it is off."""
        return split_host_port(self.metrics_addr) if self.metrics_addr else None

    @property
    def web_endpoint(self) -> tuple[str, int] | None:
        """Where the mask editor's web server listens, or None when there is none."""
        return split_host_port(self.web_addr) if self.public_url else None

    def serves_server(self, guild_id: int) -> bool:
        """Whether Easel serves the server ``guild_id`` (EASEL_ALLOWED_SERVERS)."""
        return not self.allowed_servers or guild_id in self.allowed_servers

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE_NAME

    @property
    def existing_wildcards_dir(self) -> Path | None:
        """The wildcards folder when there is one (it is optional)."""
        return self.wildcards_dir if self.wildcards_dir.is_dir() else None

    @property
    def model_hashes_file(self) -> Path:
        """The model files' SHA-256s, kept so a restart does not read them again (the models
        folder may be read-only)."""
        return self.data_dir / HASHES_FILE

    @property
    def compile_cache_dir(self) -> Path:
        """Inductor's compiled graphs and kernels, kept so a restart compiles from cache."""
        return self.data_dir / "compile-cache"

    @property
    def compiles_models(self) -> bool:
        """Whether models are compiled: only when asked for (``on``), on any device. ``auto``
        stays off until a GPU measurement shows the compiled engine faster (it was 0.90x the
        eager one, SD1.5 512² on an H200), and on a CPU the compile costs more than it saves."""
        return self.compile == "on"

    def records_cuda_graphs(self, device: str) -> bool:
        """Whether ``device``'s engine may replay UNets from CUDA graphs: on CUDA unless
        turned off (the model cache leaves compiled and offloaded models out)."""
        return self.cuda_graphs and device.startswith("cuda")

    def warms_up(self, device: str) -> bool:
        """Whether ``device``'s engine is built and warmed when the queue starts: ``auto``
        does it on CUDA, where the first job would otherwise also pay the first-call set-up,
        and not on a CPU, where it would only take the cores from the first commands."""
        if self.warm_start == "auto":
            return device.startswith("cuda")
        return self.warm_start == "on"

    @property
    def render_limits(self) -> RenderLimits:
        return RenderLimits(max_pixels=self.max_pixels, max_steps=self.max_steps)

    @property
    def dm_limits(self) -> QuotaLimits:
        return QuotaLimits(images_per_day=self.dm_images_per_day)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def inputs_dir(self) -> Path:
        """Uploaded pictures (/vary, /inpaint, /upscale), saved as PNG for the engine."""
        return self.data_dir / "inputs"

    def require_token(self) -> None:
        if not self.discord_token:
            raise SettingsError(
                "DISCORD_TOKEN is not set: put your bot token in .env (see .env.example) "
                "or the environment"
            )

    def require_data_dir(self) -> None:
        """Create the data folder, or say in one line which setting keeps it from existing."""
        problem = data_dir_problem(self.data_dir)
        if problem is None:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                problem = f"EASEL_DATA_DIR={str(self.data_dir)!r}: {error.strerror or error}"
        if problem is not None:
            raise SettingsError(problem)


# pydantic's errors for a number out of its field's range, or no number at all.
_NUMBER_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "int_parsing",
        "int_from_float",
        "float_parsing",
        "finite_number",
    }
)


def load_settings(env_file: Path | None = ENV_FILE, as_defaults: Collection[str] = ()) -> Settings:
    """Read the settings, turning pydantic's report into one line per malformed setting that
    names it and what it accepts (``SettingsError``: the first line; ``malformed``: all).
    ``as_defaults``: settings read as their defaults whatever they are set to (``easel
    doctor``'s checks past a malformed one)."""
    fields = {str(field.validation_alias): field for field in Settings.model_fields.values()}
    defaults = {name: fields[name].get_default(call_default_factory=True) for name in as_defaults}
    try:
        return Settings(_env_file=env_file, **defaults)  # type: ignore[call-arg]
    except ValidationError as error:
        malformed: dict[str, str] = {}
        for problem in error.errors():
            name = str(problem["loc"][0]) if problem["loc"] else "settings"
            field = fields.get(name)
            reason = str(problem["msg"]).removeprefix("Value error, ")
            if field is not None and problem["type"] in _NUMBER_ERRORS:
                reason = _number_range(field) or reason
            elif problem["type"] == "bool_parsing":
                reason = "must be 1 or 0 (or true or false, yes or no, on or off)"
            line = redact_url(f"{name}={problem.get('input')!r} is invalid: {reason}")
            malformed.setdefault(name, line)
        raise SettingsError(next(iter(malformed.values())), malformed) from None


def _number_range(field: FieldInfo) -> str | None:
    """What a numeric setting accepts, from its field's bounds: ``must be a whole number
    between 1 and 150``; None when it has none."""
    low = next((bound.ge for bound in field.metadata if isinstance(bound, Ge)), None)
    high = next((bound.le for bound in field.metadata if isinstance(bound, Le)), None)
    number = "a whole number" if field.annotation in (int, "int") else "a number"
    if low is not None and high is not None:
        return f"must be {number} between {low} and {high}"
    if low is not None:
        return f"must be {number} of at least {low}"
    if high is not None:
        return f"must be {number} of at most {high}"
    return None


def warn_of_unknown_settings(env_file: Path | None = ENV_FILE) -> None:
    """Log each ``unknown_settings`` line, once a process: called once logging is installed,
    so that it comes in the operator's format (``easel doctor`` shows them as its own lines
    instead)."""
    for name, line in unknown_settings(env_file).items():
        if name not in _UNKNOWN_TOLD:
            _UNKNOWN_TOLD.add(name)
            log.warning("%s", line)


def unknown_settings(env_file: Path | None = ENV_FILE) -> dict[str, str]:
    """Each EASEL_ name set in the environment or ``env_file`` that is no setting (misspelled,
    or one Easel no longer has), and the line that says it is ignored, naming the closest
    setting. A start does not fail for one: a shared environment may hold others' names."""
    settings = [str(field.validation_alias) for field in Settings.model_fields.values()]
    known = {name.upper() for name in settings}
    in_file = dotenv_values(env_file) if env_file is not None and env_file.is_file() else {}
    found = {name: "the environment" for name in os.environ} | {
        name: str(env_file) for name in in_file if name not in os.environ
    }
    lines = {}
    for name, where in sorted(found.items()):
        upper = name.upper()
        if not upper.startswith("EASEL_") or upper in known or _OTHER_EASEL_NAMES.fullmatch(upper):
            continue
        closest = difflib.get_close_matches(upper, settings, n=1)
        hint = f": did you mean {closest[0]}?" if closest else " (.env.example lists them)"
        lines[name] = f"{name} (in {where}) is not a setting of Easel, so it is ignored{hint}"
    return lines

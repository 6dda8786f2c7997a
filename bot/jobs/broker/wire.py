"""What the bot and the GPU workers say to each other over NATS JetStream.

Both sides import this module and nothing else of each other. Names:

- ``EASEL_JOBS`` (work-queue stream, file storage): one message per job on
  ``easel.jobs.<model token>``, message id = job id so a republish is dropped as a duplicate.
  Kept ``RESULT_TTL_S``, as long as the message ids are remembered.
  One durable pull consumer per model (``model-<token>``, filter = that model's subject):
  filters never overlap, as work-queue streams require, and a worker can ask for its loaded
  model's jobs first.
- ``EASEL_RESULTS`` (limits stream, one message per subject, kept ``RESULT_TTL_S``): the
  outcome of a job on ``easel.results.<job id>``; also read back after a restart or reconnect.
  PNGs up to ``inline_images_budget`` bytes in all travel inside it (no object-store round trip).
- ``EASEL_SETTLED`` (limits stream, one message per subject, kept ``RESULT_TTL_S``): the bot's
  own decisions on ``easel.settled.<job id>`` (a job cancelled, or its outcome recorded), which
  only the bot's broker user may publish: workers may publish results, and a flood of made-up
  ones pushes old ones out of the results stream (capped, discarding the oldest), never these.
  A worker asks whether a job has a subject in either before it renders, and while it renders.
- ``easel-images`` (object store, same TTL): the PNGs of finished jobs too large to go inline,
  and the input pictures of jobs (img2img, inpaint, upscale) too large to ride in the job
  message. Jobs never carry file paths: a worker refuses a message that names one.
- ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EASEL_JOBS.*``: JetStream's notice that a job
  used up its deliveries, the last one lost with its worker too; the bot then stores the failure.
  ``EASEL_ADVISORIES`` (work-queue stream) keeps these notices until a bot acknowledges one,
  so a notice that fires while no bot is connected is handled when one comes back; bots share
  one durable consumer (``easel-bots``, a queue group), so one of them handles each.
- Core NATS (not stored): ``easel.progress.<job id>`` after each step, ``easel.cancel.<job id>``,
  ``easel.doorbell`` (empty, after each job: "new work", without the job in it), and
  ``easel.workers`` (``WorkerModels``: each worker's heartbeat naming the models it renders,
  from which the bot refuses a job whose model no live worker has).

Each job message carries a secret the bot derives for that job; the worker tags its result and
progress messages with an HMAC under it (header ``Easel-Tag``), and the bot drops what does not
verify: a worker can forge the result of no job it was not given. Pictures in the object store
are named in the result with their SHA-256, so a worker cannot swap another job's pictures.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.object_store import ObjectStore

from bot.redaction import redact_url
from inference.control_units import MAX_CONTROL_UNITS
from inference.control_units import OPTION_KEY as CONTROL_OPTION
from inference.image_prompts import MAX_IMAGE_PROMPTS, image_prompt_pictures
from inference.image_prompts import OPTION_KEY as IMAGE_PROMPT_OPTION
from inference.infotext import PNG_SIGNATURE
from inference.option_names import OPTION_NAMES
from inference.types import RenderRequest, StepProgress, utf8_json

__all__ = [
    "ADVISORIES_CONSUMER",
    "ADVISORIES_STREAM",
    "ALL_PICTURES",
    "DOORBELL_SUBJECT",
    "HEARTBEAT_RANGE_S",
    "IMAGES_BUCKET",
    "JOBS_STREAM",
    "MAX_DELIVERIES_ADVISORIES",
    "MAX_OUTSTANDING_PINGS",
    "PICTURE_FIELDS",
    "PING_INTERVAL_S",
    "RESULTS_STREAM",
    "RESULT_TTL_S",
    "SETTLED_STREAM",
    "TAG_HEADER",
    "TRANSIENT_RETRY_S",
    "UNREACHABLE_ERRORS",
    "WIDE_SEEDS_VERSION",
    "WIRE_VERSION",
    "WORKERS_SUBJECT",
    "WRONG_LAST_SEQUENCE",
    "BrokerRefused",
    "BrokerUnavailable",
    "ImageRef",
    "JobMessage",
    "Outcome",
    "PictureInput",
    "ResultMessage",
    "WorkerModels",
    "cancel_subject",
    "close_quietly",
    "connect",
    "consumer_name",
    "decode_progress",
    "encode_progress",
    "ensure_streams",
    "headers_for_job",
    "inline_images_budget",
    "input_object_name",
    "is_named_picture",
    "job_id_of",
    "job_subject",
    "job_wire_version",
    "lost_with_workers",
    "max_job_bytes",
    "message_gone",
    "model_token",
    "own_object_names",
    "picture_digest",
    "progress_subject",
    "refused_for_storage",
    "result_subject",
    "retry_transient",
    "settled_subject",
    "stale_within_s",
    "stream_missing",
    "tag",
    "tag_verifies",
]

log = logging.getLogger(__name__)

JOBS_STREAM = "EASEL_JOBS"
RESULTS_STREAM = "EASEL_RESULTS"
SETTLED_STREAM = "EASEL_SETTLED"
ADVISORIES_STREAM = "EASEL_ADVISORIES"
ADVISORIES_CONSUMER = "easel-bots"
IMAGES_BUCKET = "easel-images"
JOBS_SUBJECTS = "easel.jobs.>"
RESULTS_SUBJECTS = "easel.results.*"
SETTLED_SUBJECTS = "easel.settled.*"
PROGRESS_SUBJECTS = "easel.progress.*"
CANCEL_SUBJECTS = "easel.cancel.*"
# Rung after each job is published: workers may not subscribe to the jobs' subjects themselves
# (a core subscriber there gets every job, its secret included).
DOORBELL_SUBJECT = "easel.doorbell"
# Each worker's heartbeat (``WorkerModels``), every ``WorkerModels.every_s``.
WORKERS_SUBJECT = "easel.workers"
# The heartbeat intervals a worker may have (``WorkerConfig.heartbeat_s``); a beat giving
# another is not a worker's (one of 1e300 s would never lapse).
HEARTBEAT_RANGE_S = (0.05, 60.0)
# Where a result or progress message carries its HMAC under the job's secret.
TAG_HEADER = "Easel-Tag"
MAX_DELIVERIES_ADVISORIES = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.*"
# JetStream's answer to a publish that expects an empty subject (expected last subject
# sequence 0) where a message is: a result, or the bot's marker of a settled job, is stored.
WRONG_LAST_SEQUENCE = 10071
# Long enough for a bot restarted the next morning to collect what finished overnight.
RESULT_TTL_S = 24 * 3600.0
# Byte caps, so a flood of jobs or pictures cannot fill the broker's disk. JetStream reserves
# them when a stream is made (a server with less storage refuses it, and ``ensure_streams``
# says so). Full, the jobs stream refuses a new job rather than drop waiting ones: its publish
# gets an answer (``refused_for_storage``, not an outage), so the job is failed, refunded and
# the member told, and dispatch goes on. The others drop their oldest messages, long
# collected: results and pictures are read within seconds of being stored.
JOBS_MAX_BYTES = 256 * 2**20
RESULTS_MAX_BYTES = 256 * 2**20
# The bot's decisions alone, a hundred-odd bytes a job: 20,000 jobs a day take a few MiB.
SETTLED_MAX_BYTES = 16 * 2**20
ADVISORIES_MAX_BYTES = 8 * 2**20
IMAGES_MAX_BYTES = 2**30
STREAMS_MAX_BYTES = (
    JOBS_MAX_BYTES + RESULTS_MAX_BYTES + SETTLED_MAX_BYTES + ADVISORIES_MAX_BYTES + IMAGES_MAX_BYTES
)
# What ``ensure_streams`` changes on a stream made before (its byte cap, what it drops when
# full, how long it keeps messages and remembers their ids), and the flag of
# `nats stream edit` that sets each, for an operator whose bot user may not.
_KEPT_LIMITS = {
    "max_bytes": "--max-bytes",
    "discard": "--discard",
    "max_age": "--max-age",
    "duplicate_window": "--dupe-window",
}
# How long a limits update waits for its answer: a broker user that may not update streams
# gets none, only the server's refusal (within a round trip), so each start waits this long
# for each stream whose limits differ (JetStream's requests wait 5 s).
_UPDATE_WAIT_S = 1.0
# The streams whose update each connection was refused: not asked, nor warned of, again (a
# probe of a broker that lost a stream makes the streams again).
_UPDATES_REFUSED: weakref.WeakKeyDictionary[NatsClient, set[str | None]] = (
    weakref.WeakKeyDictionary()
)
# JetStream's error code for "insufficient storage resources available".
_INSUFFICIENT_STORAGE = 10047
# JetStream's error code for a message its store refused: a full stream that discards new
# messages answers it ("maximum bytes exceeded"), with HTTP code 503.
_STORE_FAILED = 10077
# JetStream's answers that it has no room for a message: a refusal, not a broker away.
_STORAGE_REFUSALS = frozenset({_INSUFFICIENT_STORAGE, _STORE_FAILED})
# What nats-py's error names a publish or subscription the broker user may not make (lower
# case: it lowers the server's text), and the right and subject it names.
_PERMISSIONS_VIOLATION = "permissions violation"
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"')
# JetStream's API, whose requests ``ensure_streams`` publishes (nats-py's lowered spelling).
_JS_API = "$js.api."
# Names Easel gives its streams, consumers and bucket, as spelled: a refused subject is told
# with them, its other tokens (JetStream's API words) in upper case.
_EASEL_NAMES = {
    name.lower(): name
    for name in (
        JOBS_STREAM,
        RESULTS_STREAM,
        SETTLED_STREAM,
        ADVISORIES_STREAM,
        ADVISORIES_CONSUMER,
        IMAGES_BUCKET,
        f"OBJ_{IMAGES_BUCKET}",
    )
}
# Refusals the error callback logs once each, by right and the subject's first two tokens (the
# later ones name a job, or an acknowledgement's sequences), or a JetStream API request's four
# ($JS.API.STREAM.CREATE: a refused consumer create is another right missing than a refused
# stream create): past this many, it forgets them and logs each once again.
_REFUSALS_LOGGED_ONCE = 64
_SUBJECT_TOKENS_KEPT = 2
_JS_API_TOKENS_KEPT = 4
_NATS_LOG = logging.getLogger("nats.aio.client")
# JetStream's error code for "stream not found": on Easel's broker, one restarted without its
# store (``ensure_streams`` made them all at the bot's start).
_STREAM_NOT_FOUND = 10059
# JetStream's error code for a delete by sequence that failed (a 500), and its text when the
# message is not there (purged, acknowledged, deleted already): nats-server 2.15 answers no 404.
_MESSAGE_DELETE_FAILED = 10057
_NO_MESSAGE_FOUND = "no message found"
# A broker restart takes seconds; past this a publish is reported as failed.
TRANSIENT_RETRY_S = 60.0
# nats-py pings the server this often and, once this many pings in a row went unanswered,
# drops the connection as stale at the next and reconnects: a broker that froze with its TCP
# connection up (SIGSTOP, a hung host) is left within ``stale_within_s`` (60 s), not the 6 min
# of nats-py's defaults.
PING_INTERVAL_S = 20
MAX_OUTSTANDING_PINGS = 2
# PNGs up to this many bytes in all ride in the result message: fetching them from the object
# store costs the bot a round trip per image. Base64 makes them 4/3 larger, so the budget is
# also kept under half the server's max_payload (1 MiB by default).
INLINE_IMAGES_MAX_BYTES = 512 * 1024
# A job message's bytes beside its request and inline pictures (ids, signature, field names).
JOB_ENVELOPE_BYTES = 20 * 1024
# The version of the job messages this Easel writes and reads. Bump it whenever RenderRequest
# or its options (``inference.option_names``) gain a field that changes the picture, or a
# value's meaning or range changes (that one goes in ``job_wire_version``, for the jobs that
# need it): a worker older than a job's version (its "wire" field) then refuses it
# (``Outcome.OUTDATED``) rather than render another picture or fail it. One of this version
# refuses a field or option it does not know from a bot of this version or newer (the bot's,
# its "written" field), whatever the job's own. A message without "wire" is version 0 (a bot
# from before versions), which every worker takes.
WIRE_VERSION = 2
# Version 2 renders seeds past version 1's top as given: version 1 refused them as out of
# range, and wrapped a batch's seed + i there to 0.
WIDE_SEEDS_VERSION = 2
_VERSION_1_MAX_SEED = 2**32 - 1

T = TypeVar("T")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
# The request fields that name a picture file on the bot's side, and the names the pictures of
# ControlNet units (``options["controlnet"][i]["image"]``) travel under.
PICTURE_FIELDS = ("init_image", "mask_image")


def _control_picture(index: int) -> str:
    return f"control_{index}"


def _image_prompt_picture(index: int) -> str:
    return f"image_prompt_{index}"


# The pictures of an IP-Adapter image prompt (``options["ipadapter"]["images"]``) too.
ALL_PICTURES = (
    PICTURE_FIELDS
    + tuple(map(_control_picture, range(MAX_CONTROL_UNITS)))
    + tuple(map(_image_prompt_picture, range(MAX_IMAGE_PROMPTS)))
)


def _control_units(request: RenderRequest) -> list[Any]:
    units = request.options.get(CONTROL_OPTION)
    return units if isinstance(units, list) else []


def picture_paths(request: RenderRequest) -> dict[str, str]:
    """Every picture file ``request`` names, by the name it travels under."""
    paths = {name: path for name in PICTURE_FIELDS if (path := getattr(request, name))}
    for index, unit in enumerate(_control_units(request)):
        if isinstance(unit, dict) and unit.get("image") is not None:
            paths[_control_picture(index)] = str(unit["image"])
    for index, image in enumerate(image_prompt_pictures(request.options)):
        paths[_image_prompt_picture(index)] = image
    return paths


def with_picture_paths(request: RenderRequest, paths: dict[str, str]) -> RenderRequest:
    """``request`` naming exactly the files in ``paths`` (the rest of its pictures: none)."""
    units = [
        {**unit, "image": paths.get(_control_picture(index))} if isinstance(unit, dict) else unit
        for index, unit in enumerate(_control_units(request))
    ]
    options = request.options
    if CONTROL_OPTION in options:
        options = {**options, CONTROL_OPTION: units}
    prompt = options.get(IMAGE_PROMPT_OPTION)
    if isinstance(prompt, dict):
        images = [
            paths.get(_image_prompt_picture(index))
            for index in range(len(image_prompt_pictures(options)))
        ]
        options = {**options, IMAGE_PROMPT_OPTION: {**prompt, "images": images}}
    return replace(
        request,
        init_image=paths.get("init_image"),
        mask_image=paths.get("mask_image"),
        options=options,
    )


class BrokerUnavailable(Exception):
    """The NATS server cannot be reached; the message names the URL and what to check."""


class BrokerRefused(BrokerUnavailable):
    """The NATS server answers, but refuses the bot's broker user a right Easel needs; the
    message names the right."""


def _subject_token(job_id: str) -> str:
    if not _TOKEN.match(job_id):
        raise ValueError(f"job id {job_id!r} must be letters, digits, '-' or '_' only")
    return job_id


def model_token(model: str | None) -> str:
    """A subject- and consumer-safe name for a model: readable prefix plus a short hash."""
    if model is None:
        return "default"
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", model)[:40]
    return f"{readable}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"


def job_subject(model: str | None) -> str:
    return f"easel.jobs.{model_token(model)}"


def consumer_name(model: str | None) -> str:
    return f"model-{model_token(model)}"


def result_subject(job_id: str) -> str:
    return f"easel.results.{_subject_token(job_id)}"


def settled_subject(job_id: str) -> str:
    return f"easel.settled.{_subject_token(job_id)}"


def progress_subject(job_id: str) -> str:
    return f"easel.progress.{_subject_token(job_id)}"


def cancel_subject(job_id: str) -> str:
    return f"easel.cancel.{_subject_token(job_id)}"


def job_id_of(subject: str) -> str:
    """The last token of a per-job subject."""
    return subject.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class PictureInput:
    """A picture a job reads (``field``: the request field it fills), travelling with the job:
    the bytes themselves (``png``, any accepted image format) or their name in the object
    store, with their SHA-256 (``sha256``: another holder of the bucket may overwrite it).
    Never a file path: the bot's files are not the worker's, and a worker must not open a
    file that whoever can publish on the broker names."""

    field: str
    png: bytes | None = None
    object_name: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.field not in ALL_PICTURES:
            raise ValueError(f"{self.field!r} is not a picture field ({', '.join(ALL_PICTURES)})")
        if (self.png is None) == (self.object_name is None):
            raise ValueError("a picture carries either its bytes or an object name, not both")

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, **_carried_json(self.png, self.object_name, self.sha256)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PictureInput:
        return cls(body["field"], **_carried_fields(body))


def _carried_json(png: bytes | None, object_name: str | None, sha256: str | None) -> dict[str, Any]:
    """How a picture rides in a message: its bytes (base64), or its object name and digest."""
    if png is not None:
        return {"png": base64.b64encode(png).decode("ascii")}
    return {"object_name": object_name, "sha256": sha256}


def _carried_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The ``png``, ``object_name`` and ``sha256`` fields of a picture ``_carried_json`` wrote."""
    png = body.get("png")
    return {
        "png": None if png is None else base64.b64decode(png),
        "object_name": body.get("object_name"),
        "sha256": body.get("sha256"),
    }


def input_object_name(job_id: str, field: str) -> str:
    """Where a job's input picture too large to ride in its message waits in the store."""
    return f"{_subject_token(job_id)}/input-{field}"


def picture_digest(data: bytes) -> str:
    """The SHA-256 a picture in the object store is named with in a job or result message."""
    return hashlib.sha256(data).hexdigest()


def is_named_picture(data: bytes, sha256: str | None) -> bool:
    """Whether bytes read from the object store are the picture a message names by its
    digest: anyone holding the bucket may have overwritten the object."""
    return sha256 is not None and hmac.compare_digest(picture_digest(data), sha256)


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header (its first chunk), read without decoding it;
    None when ``data`` does not start as a PNG does."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def tag(secret: str, data: bytes) -> str:
    """The HMAC that proves a message about a job comes from whoever was given the job."""
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def tag_verifies(secret: str, data: bytes, headers: dict[str, str] | None) -> bool:
    given = (headers or {}).get(TAG_HEADER, "")
    return hmac.compare_digest(given, tag(secret, data))


def _read_message(kind: str, data: bytes, build: Callable[[Any], T]) -> T:
    """``build`` of the JSON in ``data``; whatever is malformed (not JSON, a field missing or
    of the wrong type) raises ``ValueError`` naming ``kind``."""
    try:
        return build(json.loads(data))
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"not {kind}: {error!r}") from None


@dataclass(frozen=True)
class JobMessage:
    """A job on the broker. Deliveries are counted by JetStream, so no attempt number here.
    The request's picture fields are empty on the wire: ``inputs`` carry the pictures.
    ``secret`` keys the tags of the job's result and progress messages (``tag``)."""

    job_id: str
    request: RenderRequest
    inputs: tuple[PictureInput, ...] = ()
    secret: str = field(default="", repr=False)
    # The oldest version of Easel whose workers render it as asked (``job_wire_version``).
    wire: int = WIRE_VERSION
    # The version of Easel's messages the bot wrote it in (``WIRE_VERSION``).
    written: int = WIRE_VERSION
    # The request's fields this Easel does not know, which ``request`` left out.
    unknown_fields: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The message as sent: its request's text in UTF-8, not escaped twice (a character
        outside ASCII cost up to 14 bytes); a worker of any version decodes either."""
        return utf8_json(
            {
                "job_id": self.job_id,
                "request": self.request.to_json(ascii_only=False),
                "inputs": [picture.to_json() for picture in self.inputs],
                "secret": self.secret,
                "wire": self.wire,
                "written": self.written,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> JobMessage:
        """Raises ``ValueError`` for anything but a well-formed job message. One of a newer
        Easel decodes: ``too_new`` says why it must not be rendered."""
        return _read_message(
            "a job message",
            data,
            lambda body: cls(
                body["job_id"],
                RenderRequest.from_json(body["request"]),
                tuple(PictureInput.from_json(picture) for picture in body.get("inputs", ())),
                str(body.get("secret", "")),
                int(body.get("wire", 0)),
                int(body.get("written", body.get("wire", 0))),  # a bot of version 1 or before
                _unknown_fields(json.loads(body["request"])),
            ),
        )

    def too_new(self) -> str | None:
        """Why this Easel cannot render the job as its bot asked (the bot is newer), or None."""
        if self.wire > WIRE_VERSION:
            return f"its messages are version {self.wire}, this worker's {WIRE_VERSION}"
        # Only a bot of this version or newer: an older bot's request lacks nothing this
        # worker needs, and a field a later Easel dropped must not refuse its jobs.
        if self.unknown_fields and self.written >= WIRE_VERSION:
            unknown = ", ".join(self.unknown_fields)
            return f"its request has fields this worker does not know ({unknown})"
        return None

    def named_paths(self) -> list[str]:
        """The request's pictures that name a file: a message that has any is refused."""
        return list(picture_paths(self.request))


def job_wire_version(request: RenderRequest) -> int:
    """The oldest version of Easel whose workers render ``request`` as asked, which its job
    message is marked with: in a rolling upgrade, older workers go on rendering every other
    job, and refuse (``JobMessage.too_new``) only those they would fail or render otherwise.
    A concrete request's (its seeds drawn): a picture's seed or variation seed is at most the
    request's + count - 1 (``inference.prompts.flags.picture_seeds``). Not seen: a seed past
    2**32 - 1 that a face fix or fast upscale reads from its picture's text (the worker's
    pass takes it over the request's), which a version 1 worker renders from its low 32 bits
    (the same starting noise; SDE's noise and the prompt's draws otherwise). Accepted: the
    bot never reads the picture's text, and it matters only while a rolling upgrade runs
    both versions."""
    last_seed = max(request.seed, request.variation_seed or 0) + request.count - 1
    return WIDE_SEEDS_VERSION if last_seed > _VERSION_1_MAX_SEED else 1


class Outcome(StrEnum):
    DONE = "done"
    CANCELLED = "cancelled"
    INVALID = "invalid"  # the engine refused the request: RenderInputError, message for the user
    FAILED = "failed"  # the engine raised, or every delivery was lost with its worker
    OUTDATED = "outdated"  # the worker is older than the bot: the job not rendered (too_new)


def _unknown_fields(request: dict[str, Any]) -> tuple[str, ...]:
    """The keys of a request's JSON that ``RenderRequest`` has no field for, and those of its
    ``options`` this Easel names none of (``OPTION_NAMES``), as ``options.<name>``."""
    known = {spec.name for spec in dataclasses.fields(RenderRequest)}
    options = request.get("options")
    unknown_options = set(options) - OPTION_NAMES if isinstance(options, dict) else set()
    return (
        *sorted(set(request) - known),
        *(f"options.{name}" for name in sorted(unknown_options)),
    )


@dataclass(frozen=True)
class ImageRef:
    """One image of a result: the PNG itself (``png``) or its name in the object store with
    the PNG's SHA-256 (``sha256``: the tagged result vouches for the stored bytes too)."""

    seed: int
    infotext: str
    width: int
    height: int
    png: bytes | None = None
    object_name: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.png is None) == (self.object_name is None):
            raise ValueError("an image carries either its PNG or an object name, not both")

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "infotext": self.infotext,
            "width": self.width,
            "height": self.height,
            **_carried_json(self.png, self.object_name, self.sha256),
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ImageRef:
        return cls(
            seed=body["seed"],
            infotext=body["infotext"],
            width=body["width"],
            height=body["height"],
            **_carried_fields(body),
        )


@dataclass(frozen=True)
class ResultMessage:
    """A job's outcome, from the worker that took it (or the bot, for a job lost with its
    workers). Decoding ignores fields it does not know, so an older bot reads a newer worker's
    result; a field added here is optional, read with a default, so this bot reads an older
    worker's."""

    job_id: str
    outcome: Outcome
    worker: str
    deliveries: int
    images: tuple[ImageRef, ...] = ()
    error: str | None = None
    # The seconds the worker's device spent rendering a done job, the wait in the broker
    # left out: what the member is charged (within the bot's own wait for the result). None:
    # a worker from before it was sent, or a malformed value.
    render_s: float | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job_id": self.job_id,
                "outcome": self.outcome.value,
                "worker": self.worker,
                "deliveries": self.deliveries,
                "images": [image.to_json() for image in self.images],
                "error": self.error,
                "render_s": self.render_s,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ResultMessage:
        """Raises ``ValueError`` for what is not a result message."""
        return _read_message(
            "a result message",
            data,
            lambda body: cls(
                job_id=body["job_id"],
                outcome=Outcome(body["outcome"]),
                worker=body["worker"],
                deliveries=body["deliveries"],
                images=tuple(ImageRef.from_json(image) for image in body["images"]),
                error=body["error"],
                render_s=_seconds(body.get("render_s")),
            ),
        )


@dataclass(frozen=True)
class WorkerModels:
    """A worker's heartbeat: the models its devices render (None: it cannot tell yet, its
    engine not built, or one that lists none: any model), sent again within ``every_s``."""

    worker: str
    models: frozenset[str] | None
    every_s: float

    def encode(self) -> bytes:
        models = None if self.models is None else sorted(self.models)
        return json.dumps(
            {"worker": self.worker, "models": models, "every_s": self.every_s}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerModels:
        """Raises ``ValueError`` for what is not a worker's heartbeat."""

        def build(body: Any) -> WorkerModels:
            models, every_s = body["models"], _seconds(body["every_s"])
            if not isinstance(body["worker"], str):
                raise TypeError("worker")
            low, high = HEARTBEAT_RANGE_S
            if every_s is None or not low <= every_s <= high:
                raise ValueError(f"every_s must be within {low:g}..{high:g} seconds")
            if models is not None and not (
                isinstance(models, list) and all(isinstance(model, str) for model in models)
            ):
                raise TypeError("models")
            return cls(body["worker"], None if models is None else frozenset(models), every_s)

        return _read_message("a worker's heartbeat", data, build)


def _seconds(value: object) -> float | None:
    """A duration a message gives, when it is a finite number (JSON may carry NaN, or an
    integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def own_object_names(job_id: str, images: Iterable[ImageRef]) -> list[str]:
    """The object names among ``images`` that are ``job_id``'s own: a job's objects are all
    named ``<job id>/...``, and a result naming another job's pictures is not trusted with
    them (deleting them, say)."""
    own = f"{job_id}/"
    return [
        ref.object_name
        for ref in images
        if ref.object_name is not None and ref.object_name.startswith(own)
    ]


def lost_with_workers(job_id: str, worker: str, deliveries: int) -> ResultMessage:
    """The failure of a job whose every delivery but the last was lost with its worker."""
    attempts = deliveries - 1
    return ResultMessage(
        job_id,
        Outcome.FAILED,
        worker,
        deliveries,
        error=f"failed after {attempts} deliveries: each worker stopped mid-render",
    )


def inline_images_budget(max_payload: int) -> int:
    """How many PNG bytes in all may ride in a result message on a server with this limit."""
    return min(INLINE_IMAGES_MAX_BYTES, max_payload // 2)


def max_job_bytes(max_payload: int) -> int:
    """The largest request (``utf8_json`` of its JSON, as ``JobMessage.encode`` writes it) a job
    message may carry on a server with this limit: what its inline input pictures (up to
    ``inline_images_budget``, base64: 4/3 larger) and the rest of the message leave."""
    inline_base64 = -(-inline_images_budget(max_payload) * 4 // 3)
    return max(0, max_payload - inline_base64 - JOB_ENVELOPE_BYTES)


def encode_progress(step: StepProgress) -> bytes:
    preview = None if step.preview is None else base64.b64encode(step.preview).decode()
    return json.dumps([step.step, step.total_steps, step.elapsed_s, preview]).encode()


def decode_progress(data: bytes) -> StepProgress:
    step, total_steps, elapsed_s, preview = json.loads(data)
    return StepProgress(
        int(step),
        int(total_steps),
        float(elapsed_s),
        None if preview is None else base64.b64decode(preview),
    )


async def connect(
    url: str, client_name: str, timeout_s: float = 10.0, inbox_prefix: str = "_INBOX"
) -> NatsClient:
    """Connect, reconnecting forever afterwards (a broker restart must not stop the process).
    ``inbox_prefix``: where replies come, so a broker user may be let subscribe to its own."""
    try:
        async with asyncio.timeout(timeout_s):
            return await nats.connect(
                url,
                name=client_name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                ping_interval=PING_INTERVAL_S,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                inbox_prefix=inbox_prefix,
                error_cb=_error_logger(),
            )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        raise BrokerUnavailable(
            redact_url(
                f"cannot reach the NATS server at {url} within {timeout_s:g} s ({error!r}); "
                "start one with `nats-server -js` or fix EASEL_QUEUE_URL"
            )
        ) from None


def stale_within_s() -> float:
    """The longest a connection made by ``connect`` whose server stopped answering stays up
    before nats-py drops it as stale (its read loop cancelled) and reconnects: its pings'
    interval times one more than the unanswered pings it allows (the count restarts at each
    PONG, and the first ping after it comes within one interval)."""
    return float(PING_INTERVAL_S * (MAX_OUTSTANDING_PINGS + 1))


async def close_quietly(nc: NatsClient) -> None:
    """Close the connection, also while the broker is away: what it still had to send cannot
    be, and nats-py raises for it; that is logged, not raised, so the process's shutdown goes on
    (the bot's database and metrics server close after it)."""
    try:
        await nc.close()
    # uvloop's transport raises RuntimeError ("the handler is closed") for a write to a socket
    # the broker already closed, where asyncio's raises OSError or drops it.
    except (nats.errors.Error, OSError, RuntimeError) as error:
        log.warning("broker connection closed while the broker was away: %r", error)


def _error_logger() -> Callable[[Exception], Awaitable[None]]:
    """nats-py's error callback, as its default logs, except that a permissions violation is
    logged once per right and subject's first tokens (``_SUBJECT_TOKENS_KEPT``,
    ``_JS_API_TOKENS_KEPT``): a probe that keeps asking for a right
    it lacks (``ensure_streams``) must not repeat it every 30 s, nor a refused right on a
    job's subjects once per job. At most ``_REFUSALS_LOGGED_ONCE`` kept."""
    logged_refusals: set[str] = set()

    async def on_error(error: Exception) -> None:
        text = str(error).lower()
        if _PERMISSIONS_VIOLATION in text:
            violation = _VIOLATION.search(text)
            if violation is None:
                key = text
            else:
                subject = violation[2]
                kept = _JS_API_TOKENS_KEPT if subject.startswith(_JS_API) else _SUBJECT_TOKENS_KEPT
                key = " ".join([violation[1], *subject.split(".")[:kept]])
            if key in logged_refusals:
                return
            if len(logged_refusals) >= _REFUSALS_LOGGED_ONCE:
                logged_refusals.clear()
            logged_refusals.add(key)
        _NATS_LOG.error("nats: encountered error", exc_info=error)

    return on_error


def _refused_since(nc: NatsClient, before: Exception | None) -> tuple[str, str] | None:
    """What the server refused and the right the broker user lacks, for the JetStream
    request that timed out, if the server refused it since ``before`` (``nc.last_error``
    when the request started): a refused publish gets no reply, only this asynchronous
    error; a refused subscription to its inbox gets the reply nowhere. None: no refusal of
    the request's own (another violation on the connection is not its cause)."""
    error = nc.last_error
    violation = None if error is before or error is None else _VIOLATION.search(str(error))
    if violation is None:
        return None
    right, subject = violation[1], violation[2]
    if right == "publish" and subject.startswith(_JS_API):
        spelled = ".".join(_EASEL_NAMES.get(token, token.upper()) for token in subject.split("."))
        return f"publish to {spelled}", "the publish right to $JS.API.>"
    inbox = nc.new_inbox().rpartition(".")[0]  # the prefix, as spelled
    if right == "subscription" and subject.startswith(f"{inbox.lower()}."):
        return (
            f"the subscription to {inbox}.>, where answers come",
            f"the subscribe right to {inbox}.>",
        )
    return None


def _one_a_job(name: str, subjects: str, max_bytes: int) -> StreamConfig:
    """A stream keeping the last message of each job's subject for ``RESULT_TTL_S``, its
    oldest dropped when full."""
    return StreamConfig(
        name=name,
        subjects=[subjects],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=RESULT_TTL_S,
        max_msgs_per_subject=1,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
    )


async def ensure_streams(nc: NatsClient, js: JetStreamContext) -> ObjectStore:
    """Create the streams and the image bucket when missing, and give them their limits
    (``_KEPT_LIMITS``: streams an older Easel made lack some); returns the bucket. Raises
    ``BrokerRefused`` when the broker user may not make one (a deployment that made them with
    another user and lets the bot only use them must make them again after a loss: the bot
    cannot); one it may not update is only logged (``_keep_up_to_date``)."""
    wanted = [
        StreamConfig(
            name=JOBS_STREAM,
            subjects=[JOBS_SUBJECTS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_bytes=JOBS_MAX_BYTES,
            discard=DiscardPolicy.NEW,
            # A job older than its result would be is of no use: the slot waiting for it fails
            # it once it is gone without a result. Its id is remembered as long: a restarted
            # bot's republish of a job still waiting (or rendering) is dropped as a duplicate.
            max_age=RESULT_TTL_S,
            duplicate_window=RESULT_TTL_S,
        ),
        _one_a_job(RESULTS_STREAM, RESULTS_SUBJECTS, RESULTS_MAX_BYTES),
        _one_a_job(SETTLED_STREAM, SETTLED_SUBJECTS, SETTLED_MAX_BYTES),
        StreamConfig(
            name=ADVISORIES_STREAM,
            subjects=[MAX_DELIVERIES_ADVISORIES],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=RESULT_TTL_S,
            max_bytes=ADVISORIES_MAX_BYTES,
            discard=DiscardPolicy.OLD,
        ),
    ]
    before = nc.last_error
    step = ""  # what the broker user was doing, for a refusal
    try:
        for config in wanted:
            assert config.name is not None
            step = f"read the stream {config.name}'s settings"
            try:
                current = (await js.stream_info(config.name)).config
            except nats.js.errors.NotFoundError:
                step = f"create the stream {config.name}"
                await js.add_stream(config)
                continue
            step = f"update the stream {config.name} (its limits)"
            await _keep_up_to_date(nc, current, config)
            before = nc.last_error  # a refused update, only logged, is no later step's cause
        step = f"read the picture bucket {IMAGES_BUCKET}"
        try:
            images = await js.object_store(IMAGES_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            step = f"create the picture bucket {IMAGES_BUCKET}"
            images = await js.create_object_store(
                IMAGES_BUCKET, ttl=RESULT_TTL_S, storage=StorageType.FILE
            )
        step = f"update the picture bucket {IMAGES_BUCKET} (its byte cap)"
        bucket = (await js.stream_info(f"OBJ_{IMAGES_BUCKET}")).config
        capped = StreamConfig(max_bytes=IMAGES_MAX_BYTES, discard=DiscardPolicy.OLD)
        await _keep_up_to_date(nc, bucket, capped)
    except nats.errors.TimeoutError:
        refusal = _refused_since(nc, before)
        if refusal is None:
            raise
        refused, right = refusal
        raise BrokerRefused(
            f"the broker user of EASEL_QUEUE_URL may not {step} (the server refuses it "
            f"{refused}): give it {right} as the bot user of deploy/nats-server.conf has, or "
            "make Easel's streams with a user that may"
        ) from None
    except nats.js.errors.APIError as error:
        if error.err_code != _INSUFFICIENT_STORAGE:
            raise
        raise BrokerUnavailable(
            f"the NATS server has less JetStream storage than Easel's streams reserve "
            f"({STREAMS_MAX_BYTES // 2**20} MiB in all): raise its max_file_store, or free "
            "disk space where it stores"
        ) from None
    return images


async def _keep_up_to_date(nc: NatsClient, current: StreamConfig, wanted: StreamConfig) -> None:
    """Give an existing stream (an older Easel's lacks some) the limits of ``_KEPT_LIMITS``
    that ``wanted`` sets (None or 0: the server's default, left as it is). A broker user that
    may not update streams (their maker is another user) keeps them as they are, with a
    warning naming the command that sets them, once a connection: Easel works with them, less
    well (an older Easel's jobs stream forgets a job's id after 2 min, so a bot restarted later
    may have it rendered twice, and keeps a job no worker takes for ever)."""
    changed = {
        name: value
        for name in _KEPT_LIMITS
        if (value := getattr(wanted, name)) and getattr(current, name) != value
    }
    refused = _UPDATES_REFUSED.setdefault(nc, set())
    if not changed or current.name in refused:
        return
    before = nc.last_error
    try:
        # Its own context: only this request's wait is shorter.
        await nc.jetstream(timeout=_UPDATE_WAIT_S).update_stream(replace(current, **changed))
    except nats.errors.TimeoutError:
        refusal = _refused_since(nc, before)
        if refusal is None:
            raise
        refused.add(current.name)
        flags = " ".join(
            f"{_KEPT_LIMITS[name]} {_cli_value(value)}" for name, value in changed.items()
        )
        forever = current.name == JOBS_STREAM and not current.max_age
        log.warning(
            "the broker user of EASEL_QUEUE_URL may not update the stream %s (the server "
            "refuses it %s): Easel goes on with its limits as they are; set them with a user "
            "that may: nats stream edit %s %s%s",
            current.name,
            refusal[0],
            current.name,
            flags,
            # The bot's record of a cancel expires after a day (RESULT_TTL_S), its message not.
            ". Until then a cancelled job whose message the bot could not delete is rendered "
            "by a worker that takes it a day later"
            if forever
            else "",
        )


def _cli_value(value: object) -> str:
    """A limit as `nats stream edit` takes it: a duration (seconds here) as 24h or 90s."""
    if isinstance(value, DiscardPolicy):
        return value.value
    if isinstance(value, float):
        return f"{value / 3600:g}h" if value % 3600 == 0 else f"{value:g}s"
    return str(value)


# Failures that a reconnect or a JetStream leader coming back will cure.
_TRANSIENT: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
# What an operation raises when the broker does not answer: a transient failure still there
# once ``retry_transient`` gave up, or the client's buffer for a broker away filled up.
# JetStream's answers among them (``refused_for_storage``) are not: the broker did answer.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (
    *_TRANSIENT,
    nats.errors.OutboundBufferLimitError,
)


def refused_for_storage(error: Exception) -> bool:
    """Whether ``error`` is JetStream's answer that it has no room for a message (a full
    stream, a full disk): a 503 like a broker away, told apart by its error code."""
    return isinstance(error, nats.js.errors.APIError) and error.err_code in _STORAGE_REFUSALS


def stream_missing(error: Exception) -> bool:
    """Whether ``error`` is JetStream's answer that a stream it was asked about is not there."""
    return isinstance(error, nats.js.errors.NotFoundError) and error.err_code == _STREAM_NOT_FOUND


def message_gone(error: Exception) -> bool:
    """Whether ``error`` is JetStream's answer to a delete of a message that is not there, nor
    (a 404) its stream. Another failure to delete (a store closed or failing) is not."""
    if isinstance(error, nats.js.errors.NotFoundError):
        return True
    return (
        isinstance(error, nats.js.errors.APIError)
        and error.err_code == _MESSAGE_DELETE_FAILED
        and error.description == _NO_MESSAGE_FOUND
    )


async def retry_transient(
    what: str, operation: Callable[[], Awaitable[T]], give_up_after_s: float = TRANSIENT_RETRY_S
) -> T:
    """Run ``operation`` again while the broker is away; safe only for idempotent operations."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    delay = 0.05
    while True:
        try:
            return await operation()
        except _TRANSIENT as error:
            if loop.time() + delay > deadline:
                raise
            log.info("%s: broker unavailable (%r); retrying", what, error)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


def headers_for_job(job_id: str) -> dict[str, Any]:
    # JetStream drops a second message with the same id inside the stream's duplicate window.
    return {"Nats-Msg-Id": job_id}

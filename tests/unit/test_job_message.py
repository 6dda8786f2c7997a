"""A job as the broker carries it (bot.jobs.broker.wire.JobMessage): text outside ASCII in
UTF-8, not escaped twice; messages of either encoding read back; a job of a newer bot than
the worker says why the worker cannot render it as asked."""

from __future__ import annotations

import json

from bot.jobs.broker.wire import WIDE_SEEDS_VERSION, WIRE_VERSION, JobMessage, job_wire_version
from inference.types import RenderRequest

PROMPT = "\N{GRINNING FACE} \N{CJK UNIFIED IDEOGRAPH-732B} caf\N{LATIN SMALL LETTER E WITH ACUTE}"


def test_text_outside_ascii_costs_its_utf8_bytes_once() -> None:
    prompt = PROMPT * 200
    message = JobMessage("job", RenderRequest(prompt, prompt, seed=1), (), "secret")
    data = message.encode()
    assert JobMessage.decode(data) == message
    # Twice the prompt's UTF-8 and the rest of the request: an emoji escaped twice took 14.
    assert len(data) < 2 * len(prompt.encode()) + 1024


def test_a_lone_surrogate_and_a_message_encoded_before_read_back() -> None:
    lone = RenderRequest(PROMPT + "\ud800", seed=1)  # UTF-8 cannot carry it: escaped
    before = RenderRequest(PROMPT, seed=1)
    escaped = json.dumps(  # as the bot encoded jobs before (ASCII, escaped twice)
        {"job_id": "job", "request": before.to_json(), "inputs": [], "secret": "s"}
    ).encode()
    assert JobMessage.decode(JobMessage("job", lone, (), "s").encode()).request == lone
    # Nor did it write a version: the oldest.
    assert JobMessage.decode(escaped) == JobMessage("job", before, (), "s", wire=0, written=0)


def test_a_job_of_this_version_or_an_older_bots_is_honoured() -> None:
    request = RenderRequest("a cat", seed=1, schedule_type="Karras")
    current = JobMessage.decode(JobMessage("job", request, (), "s").encode())
    assert (current.wire, current.too_new()) == (WIRE_VERSION, None)
    body = json.loads(JobMessage("job", request, (), "s").encode())
    del body["wire"], body["written"]  # as a bot from before versions wrote it
    older = JobMessage.decode(json.dumps(body).encode())
    assert (older.wire, older.too_new(), older.request) == (0, None, request)
    # A field a later Easel dropped, in an older bot's request: not a reason to refuse it.
    dropped = json.loads(body["request"])
    dropped["clip_skip_legacy"] = 2
    oldest = JobMessage.decode(json.dumps({**body, "request": json.dumps(dropped)}).encode())
    assert (oldest.wire, oldest.too_new()) == (0, None)


def test_a_job_of_a_newer_bot_says_why_it_cannot_be_honoured() -> None:
    body = json.loads(JobMessage("job", RenderRequest("a cat", seed=1), (), "s").encode())
    newer = JobMessage.decode(json.dumps({**body, "wire": WIRE_VERSION + 1}).encode())
    assert newer.too_new() == (
        f"its messages are version {WIRE_VERSION + 1}, this worker's {WIRE_VERSION}"
    )
    request = json.loads(body["request"])
    request["guidance_rescale"] = 0.7  # a field a later Easel might add, unbumped
    unknown = JobMessage.decode(json.dumps({**body, "request": json.dumps(request)}).encode())
    assert (
        unknown.too_new() == "its request has fields this worker does not know (guidance_rescale)"
    )
    # The request itself still reads (the bot's journal reads old and new requests alike).
    assert unknown.request == RenderRequest("a cat", seed=1)


def test_a_job_is_marked_with_the_oldest_version_that_renders_it_as_asked() -> None:
    """A worker of version 1 refused seeds past 2**32 - 1 and wrapped a batch's seed + i
    there: only the jobs whose pictures' seeds go past it are marked version 2, so version 1
    workers go on rendering the others in a rolling upgrade, and decline those."""
    top = 2**32 - 1
    for within in (RenderRequest("a", seed=top), RenderRequest("a", seed=top - 3, count=4)):
        assert job_wire_version(within) == 1
    for past in (
        RenderRequest("a", seed=top + 1),
        RenderRequest("a", seed=top, count=2),
        RenderRequest("a", seed=1, variation_seed=top - 1, variation_strength=0.5, count=3),
    ):
        assert job_wire_version(past) == WIDE_SEEDS_VERSION
    # The bot's own version still refuses a field the worker does not know, in a job of any.
    body = json.loads(JobMessage("job", RenderRequest("a", seed=1), (), "s", wire=1).encode())
    request = json.loads(body["request"])
    request["guidance_rescale"] = 0.7
    unknown = JobMessage.decode(json.dumps({**body, "request": json.dumps(request)}).encode())
    assert (unknown.wire, unknown.written) == (1, WIRE_VERSION)
    assert unknown.too_new() == (
        "its request has fields this worker does not know (guidance_rescale)"
    )

"""A job as the broker carries it (bot.jobs.broker.wire.JobMessage): text outside ASCII in
UTF-8, not escaped twice; messages of either encoding read back."""

from __future__ import annotations

import json

from bot.jobs.broker.wire import JobMessage
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
    assert JobMessage.decode(escaped) == JobMessage("job", before, (), "s")

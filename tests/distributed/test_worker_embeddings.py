"""A GPU worker reads only the embeddings the bot found the prompt names among its own: one in
the worker's folder alone (the bot never saw it, its server's list never judged it) is plain
prompt text there."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.policy.prompt_safety import plan_request
from inference.tiny import write_tiny_embedding
from inference.types import USED_EMBEDDINGS_OPTION, RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.embedding_reads import EMBEDDING_IDS_FROM, recorded_encoder_ids


async def test_a_worker_reads_no_embedding_the_bot_did_not_see(
    nats: NatsTransport, tiny_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.engine import Engine

    worker_models = tmp_path / "worker-models"
    worker_models.mkdir()
    (worker_models / "tiny").symlink_to(tiny_models_dir / "tiny")
    write_tiny_embedding(worker_models / "embeddings" / "sparkle.safetensors", seed=3)
    typed = RenderRequest("a cat sparkle", seed=1, steps=1, width=64, height=64)
    request = plan_request(typed, (), None, embeddings=())  # none installed for the bot
    assert request.options[USED_EMBEDDINGS_OPTION] == []
    read_ids = recorded_encoder_ids(monkeypatch)
    nats.start_worker(Engine(worker_models, default_model="tiny"))
    client = await nats.client()

    [image] = await client.render("job-embeddings", request, None, None)

    assert image.png
    assert read_ids["a cat sparkle"]  # the worker's encoder read the prompt here
    assert max(read_ids["a cat sparkle"]) < EMBEDDING_IDS_FROM

"""A worker renders the prompt texts the bot drew from its own wildcards folder and checked for
banned words, whatever folder the worker has (docker-compose's workers have an empty one)."""

from __future__ import annotations

from pathlib import Path

from bot.policy.prompt_safety import plan_request
from inference.prompts import WildcardLibrary, expand_prompt
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport


async def test_a_worker_renders_the_bot_s_draws_not_its_own_folder_s(
    nats: NatsTransport, tiny_models_dir: Path, tmp_path: Path
) -> None:
    from inference.engine import Engine

    bot_folder, worker_folder = tmp_path / "bot", tmp_path / "worker"
    bot_folder.mkdir()
    worker_folder.mkdir()
    (bot_folder / "animal.txt").write_text("cat\ndog\nbird\nfish\nfrog\n", encoding="utf-8")
    # The worker's file differs: its draws would be words the bot's check never read.
    (worker_folder / "animal.txt").write_text("snake\n", encoding="utf-8")
    typed = RenderRequest("a __animal__", seed=1, count=2, steps=1, width=64, height=64)
    request = plan_request(typed, {"snake"}, bot_folder)
    nats.start_worker(Engine(tiny_models_dir, default_model="tiny", wildcards_dir=worker_folder))
    client = await nats.client()

    images = await client.render("job-wildcards", request, None, None)

    # Each picture its own draw, seeded as the web UI does (seed + i): "a cat", "a bird".
    drawn = expand_prompt("a __animal__", 1, WildcardLibrary(bot_folder), count=2)
    assert [image.infotext.splitlines()[0] for image in images] == [e.text for e in drawn]

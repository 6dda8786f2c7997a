"""/compare through the fake Discord: one labelled grid through the queue, each picture charged,
the server's limits and rules applied to every cell."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import EaselBot, build
from bot.jobs.accounting import Member
from bot.policy.quota import Period
from bot.services import Services
from inference.infotext import infotext_from_png
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    limit_daily_images,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot

CELL = 64  # QUICK renders 64x64


def labels_of(message: StoredMessage) -> list[str]:
    return [c["label"] for row in message.components for c in row["components"]]


async def images_today(services: Services, fake: FakeDiscord) -> int:
    report = await services.quota_status.report(Member(fake.user_id, fake.guild_id))
    return next(p.images for p in report.periods if p.period is Period.DAY)


def reads_of(bot: EaselBot, monkeypatch: pytest.MonkeyPatch, *methods: str) -> Counter[str]:
    """How often each of ``methods`` of the bot's guild policy is called from now on."""
    calls: Counter[str] = Counter()
    policy = bot.services.guild_policy
    for method in methods:
        real = getattr(policy, method)

        def counted(*args: Any, _real: Any = real, _method: str = method, **kwargs: Any) -> Any:
            calls[_method] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(policy, method, counted)
    return calls


async def test_a_two_by_two_comparison_is_one_labelled_grid_charged_four(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        services = bot.services
        await limit_daily_images(fake, 5)
        options = {"prompt": "a red cat", "x": "seed", "x_values": "1, 2", **QUICK}
        handle = await fake.invoke_command("compare", {**options, "y": "cfg", "y_values": "3, 9"})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert not result.is_ephemeral
        assert labels_of(result) == ["Delete"]  # a plot's cells are not U/V choices
        png = result.attachments[0].data
        infotext = infotext_from_png(png)
        assert infotext is not None and "Seed: 1," in infotext
        assert 'X Type: Seed, X Values: "1, 2", Y Type: CFG Scale, Y Values: "3, 9"' in infotext
        with Image.open(io.BytesIO(png)) as grid:
            grid = grid.convert("RGB")
        width, height = grid.size
        assert width > 2 * CELL and height > 2 * CELL  # labels above and beside the cells
        cells = [
            grid.crop(
                (
                    width - (2 - col) * CELL,
                    height - (2 - row) * CELL,
                    width - (1 - col) * CELL,
                    height - (1 - row) * CELL,
                )
            )
            for row in range(2)
            for col in range(2)
        ]
        assert len({cell.tobytes() for cell in cells}) == 4
        assert await images_today(services, fake) == 4
        shown = await reply_to(fake, "show", {"job_id": job_id_of(result)})
        assert [a.data for a in shown.attachments] == [png] and labels_of(shown) == ["Delete"]

        # The last cell is the picture /imagine makes with its settings.
        alone = await imagine(fake, "a red cat", seed=2, cfg=9.0)
        with Image.open(io.BytesIO(alone.attachments[0].data)) as picture:
            assert picture.convert("RGB").tobytes() == cells[3].tobytes()
        assert await images_today(services, fake) == 5

        # Over the member's limit: refused privately, before anything is queued or charged.
        # Before the answer, /compare reads the default model and the server's settings (its
        # models list) once each, not again for its cells (each read may hop to a thread):
        # 2 and 7 reads before, 1 and 4 now (the rest are the enabled check's and admission's).
        reads = reads_of(bot, monkeypatch, "default_model_where", "settings")
        over = await fake.invoke_command("compare", options)
        refusal = await over.wait_for_original(lambda m: "⛔" in m.content)
        assert reads["default_model_where"] == 1 and reads["settings"] <= 4, reads
        assert refusal.is_ephemeral and over.response_type == 4
        assert bot.queue.queued_count() == 0 and await images_today(services, fake) == 5


async def test_every_cell_meets_the_servers_rules(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "other"):  # two installed models; the server allows one
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    bot = build(easel_settings(fake, tmp_path / "data", models))
    async with running_bot(fake, bot):
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "dog"}, user=fake.owner_id
        )
        await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=fake.owner_id
        )
        refusals = {
            "prompt S/R": {"x": "prompt", "x_values": "cat, dog"},
            "disallowed model": {"x": "model", "x_values": "tiny, other"},
            "too many pictures": {"x": "seed", "x_values": "1-5", "y": "steps", "y_values": "1-4"},
            "server's steps": {"x": "steps", "x_values": "2, 151"},
        }
        answers = {}
        for case, axes in refusals.items():
            answer = await reply_to(fake, "compare", {"prompt": "a red cat", **QUICK, **axes})
            assert answer.is_ephemeral, case
            answers[case] = answer.content
        assert "The word 'dog' is banned on this server" in answers["prompt S/R"]
        assert (
            "The model `other` is not installed or not allowed here. You may use: tiny."
            in answers["disallowed model"]
        )
        assert (
            "at most 16 pictures; 5 seed values x 4 steps values make 20"
            in answers["too many pictures"]
        )
        assert "Steps values must be between 1 and 150 here, not 151" in answers["server's steps"]
        assert bot.queue.queued_count() == 0

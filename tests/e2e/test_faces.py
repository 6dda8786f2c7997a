"""Fix faces through the fake Discord: the button under a single result re-renders and
restores the faces of that picture as a job charged to whoever presses it, and is refused on
a picture the presser cannot see (a private result, a channel they cannot read) and, with
nothing charged, on a picture without a face."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from bot.app import EaselBot, build
from bot.policy.visibility import NOT_YOURS_TO_CLICK
from inference.faces import RESTORE_MARGIN, face_detector
from inference.infotext import infotext_from_png, parse_infotext, png_with_infotext
from inference.tiny import write_tiny_face_restorer
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    has_picture,
    images_today,
    imagine,
    job_id_of,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot

StartFaceEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
OTHER = 5252


@pytest.fixture(scope="module")
def face_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """The tiny checkpoint beside a tiny random RestoreFormer in ``face_restore/``."""
    directory = tmp_path_factory.mktemp("face-models")
    (directory / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_face_restorer(directory)
    return directory


@pytest.fixture
def start_face_easel(
    fake_discord: FakeDiscord, tmp_path: Path, face_models_dir: Path
) -> StartFaceEasel:
    @asynccontextmanager
    async def start() -> AsyncIterator[EaselBot]:
        bot = build(easel_settings(fake_discord, tmp_path / "data", face_models_dir))
        async with running_bot(fake_discord, bot):
            yield bot

    return start


async def with_a_face(bot: EaselBot, result: StoredMessage) -> np.ndarray:
    """Put a photograph with a face where the result's picture is stored (its infotext
    kept): the tiny model's pictures have none. Returns the photograph's pixels."""
    job = await bot.services.history.job(job_id_of(result))
    assert job is not None
    [path] = job.image_paths
    photo = skimage.data.astronaut()
    path.write_bytes(png_with_infotext(Image.fromarray(photo), job.infotexts[0]))
    return photo


async def test_fix_faces_renders_through_the_queue_for_the_presser(
    fake_discord: FakeDiscord, start_face_easel: StartFaceEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    async with start_face_easel() as bot:
        result = await imagine(fake_discord, "portrait of an astronaut --faces")
        made = infotext_from_png(result.attachments[0].data)
        assert made is not None and "ADetailer model: haar frontal face" in made  # the flag
        photo = await with_a_face(bot, result)

        click = await fake_discord.click(result, label="Fix faces", user=OTHER)
        fixed = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        assert f"<@{OTHER}>" in fixed.content  # made for, and charged to, the presser
        guild = fake_discord.guild_id
        assert await images_today(bot.services, OTHER, guild) == 1
        assert await images_today(bot.services, fake_discord.user_id, guild) == 1
        png = fixed.attachments[0].data
        infotext = infotext_from_png(png)
        assert infotext is not None
        prompt, _, params = parse_infotext(infotext)
        assert prompt == "portrait of an astronaut"
        assert params["ADetailer model"] == "haar frontal face"
        assert params["Face restoration"] == "RestoreFormer"
        after = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        [face] = face_detector(Path()).detect(Image.fromarray(photo))
        crop = face.square_around(RESTORE_MARGIN, (photo.shape[1], photo.shape[0]))
        changed = np.abs(after.astype(int) - photo.astype(int)).sum(axis=-1) > 0
        assert changed[face.top : face.bottom, face.left : face.right].mean() > 0.5
        changed[crop.top : crop.bottom, crop.left : crop.right] = False
        assert not changed.any(), "pixels away from the face changed"


async def test_fix_faces_is_refused_on_a_picture_the_presser_cannot_see(
    fake_discord: FakeDiscord, start_face_easel: StartFaceEasel
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    mods = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])
    async with start_face_easel() as bot:
        made_in_mods = await fake.invoke_command(
            "imagine",
            {"prompt": "the moderators' astronaut", **QUICK},
            user=fake.owner_id,
            channel=mods,
        )
        in_mods = await made_in_mods.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await reply_to(fake, "settings", {"private_results": True})
        private = await imagine(fake, "my secret astronaut")
        assert private.is_ephemeral

        # Copies of those results' buttons where OTHER can click them: both refused.
        for original, refusal in [
            (private, "no longer in the history"),
            (in_mods, NOT_YOURS_TO_CLICK),
        ]:
            copy = await fake.post_user_message("a copy", user=fake.bot_user_id)
            copy.payload["components"] = original.components
            click = await fake.click(copy, label="Fix faces", user=OTHER)
            refused = await click.wait_for_original(lambda m: not m.is_loading)
            assert refused.is_ephemeral and refusal in refused.content, refused.content
        assert await images_today(bot.services, OTHER, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0

        # A picture without a face (the tiny model's): told, and the job is not charged.
        faceless = await imagine(fake, "a plain wall", user=OTHER)
        click = await fake.click(faceless, label="Fix faces", user=OTHER)
        failed = await click.wait_for_original(lambda m: "❌" in m.content, RENDER_TIMEOUT_S)
        assert "no face found in this picture" in failed.content
        assert await images_today(bot.services, OTHER, fake.guild_id) == 1  # the /imagine

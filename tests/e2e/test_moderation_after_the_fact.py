"""Pictures that outlive their moderation, held shut through the fake Discord: a result a
moderator deletes in Discord is withdrawn (/show, the buttons, the Vary, Use settings and Use
as control menus of a copy and a --sref link to it refuse it, /history says so) while another
member's picture is unaffected, until a word banned since or a purge of a re-post of it
reaches it too; a server admin may restore a withdrawn job. A copy of a withdrawn picture (or
of the grid it was posted in) saved again under another name, without its PNG text, is refused
as an upload too."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Collection
from pathlib import Path

import pytest
from PIL import Image

from bot.app import EaselBot
from bot.policy.moderation import BANNED_SINCE, WITHDRAWN_PICTURE
from inference.tiny import write_tiny_ip_adapter
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.pictures import has_picture

OTHER = 5353
WITHDRAWAL_WAIT_S = 10.0


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """The shared tiny models, with a tiny IP-Adapter beside them (``--sref`` reads a link)."""
    directory = tmp_path_factory.mktemp("sref-models")
    for entry in tiny_models_dir.iterdir():
        (directory / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    write_tiny_ip_adapter(directory / "tiny")
    return directory


def deletions_read(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[list[str]]:
    """The jobs withdrawn by each deletion the bot reads (a gateway event: no reply to wait
    for)."""
    history, read = bot.services.history, asyncio.Queue[list[str]]()
    withdraw_deleted = history.withdraw_deleted

    async def reading(guild_id: int, channel_id: int, message_ids: Collection[int]) -> list[str]:
        withdrawn = await withdraw_deleted(guild_id, channel_id, message_ids)
        read.put_nowait(withdrawn)
        return withdrawn

    monkeypatch.setattr(history, "withdraw_deleted", reading)
    return read


async def show(fake: FakeDiscord, job_id: str, user: int | None = None) -> StoredMessage:
    return await reply_to(fake, "show", {"job_id": job_id}, user=user)


async def test_a_result_deleted_by_a_moderator_is_not_shown_or_used_again(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        grid_made = await fake.invoke_command(
            "imagine", {"prompt": "a lighthouse", "count": 2, **QUICK}
        )
        grid = await grid_made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        boat = await imagine(fake, "a red boat", user=OTHER)
        lighthouse, boat_job = job_id_of(grid), job_id_of(boat)
        copy = await show(fake, lighthouse)  # posted again, with U1 and U2, before the deletion
        assert has_picture(copy) and not copy.is_ephemeral

        await fake.delete_messages(grid)  # MESSAGE_DELETE, as a moderator's deletion sends
        assert await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) == [lighthouse]
        refused = await show(fake, lighthouse)
        assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        click = await fake.click(copy, label="U1")
        picked = await click.wait_for_original()
        assert picked.is_ephemeral and WITHDRAWN_PICTURE in picked.content
        # Every path that makes a new job of a posted picture: its menus and a link to it.
        for menu in ("Vary", "Use settings", "Use as control"):
            used = await (await fake.invoke_message_command(menu, copy)).wait_for_original()
            assert used.is_ephemeral and WITHDRAWN_PICTURE in used.content, menu
        # A link to the post, or to its file (named for the job: a name only ever refuses).
        for link in (copy.jump_url, copy.attachments[0].url):
            styled = await fake.invoke_command(
                "imagine", {**QUICK, "prompt": f"a cat --sref {link}"}
            )
            refused = await styled.wait_for_original(lambda message: not message.is_loading)
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content, link
        listed = await reply_to(fake, "history")
        assert f"`{lighthouse}`" in listed.content and "removed by a moderator" in listed.content

        # Another member's picture is unaffected, until its server bans a word it renders...
        shown_boat = await show(fake, boat_job, user=OTHER)
        assert has_picture(shown_boat)
        ban = {"action": "add", "word": "boat"}
        await reply_to(fake, "easel-admin banned-word", ban, user=fake.owner_id)
        banned = await show(fake, boat_job, user=OTHER)
        assert banned.is_ephemeral and BANNED_SINCE in banned.content
        assert "boat" not in banned.content
        # A button that submits its prompt again says so too, naming no word to any clicker.
        reroll = await fake.click(boat, f"easel:reroll:{boat_job}")
        rerolled = await reroll.wait_for_original()
        assert rerolled.is_ephemeral and BANNED_SINCE in rerolled.content
        assert "boat" not in rerolled.content
        # ... and a purge (MESSAGE_DELETE_BULK) that takes a re-post of it withdraws it as well.
        chatter = await fake.post_user_message("spam", user=OTHER)
        await fake.delete_messages(chatter, shown_boat)
        assert await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) == [boat_job]
        assert bot.queue.queued_count() == 0

        # A server's admin may restore a withdrawn job (audited); its maker may show it again.
        restore = "easel-admin restore"
        for job, answer in ((lighthouse, "Restored"), (lighthouse, "was not withdrawn")):
            restored = await reply_to(fake, restore, {"job": job}, user=fake.owner_id)
            assert restored.is_ephemeral and answer in restored.content, restored.content
        shown_again = await show(fake, lighthouse)
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        assert f"restore: — → {lighthouse}" in audit.content
        # A U1 post of it is one of its posts too: deleting it withdraws the job again.
        u1_post = await (await fake.click(shown_again, label="U1")).wait_for_original()
        assert has_picture(u1_post)
        await fake.delete_messages(u1_post)
        # Deleted at once, maybe before Easel recorded the post: the deletion withdraws the
        # job when read, or (remembered) when the post is recorded.
        assert await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) in ([lighthouse], [])
        for _ in range(int(WITHDRAWAL_WAIT_S / 0.05)):
            stored = await bot.services.history.job(lighthouse)
            if stored is not None and stored.withdrawn:
                break
            await asyncio.sleep(0.05)
        assert stored is not None and stored.withdrawn


def saved_again(message: StoredMessage) -> bytes:
    """The message's picture as a member saves it again: a PNG without its text."""
    with Image.open(io.BytesIO(message.attachments[0].data)) as picture:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_withdrawn_picture_uploaded_again_under_another_name_is_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pixels name it: /blend and /vary refuse the copy of a withdrawn job's posted grid
    (a job of two pictures is posted, deleted and saved as that one picture); a copy of a
    picture still shown is blended."""
    fake = fake_discord
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        lighthouse = await imagine(fake, "a lighthouse", count=2)
        boat = await imagine(fake, "a red boat")
        await fake.delete_messages(lighthouse)
        withdrawn = await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)
        assert withdrawn == [job_id_of(lighthouse)]
        copy, boat_copy = ("holiday.png", saved_again(lighthouse)), ("sea.png", saved_again(boat))
        assert b"parameters" not in copy[1]
        blend = await fake.invoke_command(
            "blend", {"prompt": "--steps 2"}, attachments={"image1": boat_copy, "image2": copy}
        )
        # /blend reads its uploads once acknowledged: it refuses in a follow-up.
        for refused in (
            await blend.wait_for_followup(),
            await reply_to(fake, "vary", {}, attachments={"image": copy}),
        ):
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert bot.queue.queued_count() == 0
        blended = await fake.invoke_command(
            "blend", {"prompt": "--steps 2"}, attachments={"image1": boat_copy, "image2": boat_copy}
        )
        await blended.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

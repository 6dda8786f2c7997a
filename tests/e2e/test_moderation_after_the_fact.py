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
from PIL import ExifTags, Image

from bot.app import EaselBot
from bot.history import WITHDRAWAL_AUDITED_AS, StoredJob
from bot.jobs.queue import FinishedJob
from bot.policy.moderation import BANNED_SINCE, WITHDRAWN_PICTURE
from inference.tiny import write_tiny_ip_adapter
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    imagine,
    job_id_of,
    modal_fields,
    reply_to,
)
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

    async def reading(
        guild_id: int, channel_id: int, message_ids: Collection[int], *, by: int | None = None
    ) -> list[str]:
        withdrawn = await withdraw_deleted(guild_id, channel_id, message_ids, by=by)
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
        # The withdrawal's deletes of its other posts are left to the sweep (15 minutes
        # apart): its /show copy stays, as one Discord refused to delete would, and what it
        # offers refuses.
        monkeypatch.setattr(bot.services.history, "posts_left_to_delete", lambda: None)
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
            used = await (await fake.invoke_message_command(menu, copy)).wait_for_answer()
            assert used.is_ephemeral and WITHDRAWN_PICTURE in used.content, menu
        # A link to the post, or to its file (named for the job: a name only ever refuses).
        for link in (copy.jump_url, copy.attachments[0].url):
            styled = await fake.invoke_command(
                "imagine", {**QUICK, "prompt": f"a cat --sref {link}"}
            )
            refused = await styled.wait_for_answer()
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content, link
        # Vary and both links read the picture once acknowledged: each refusal deleted its
        # public "thinking…", a deletion that withdraws nothing.
        thinking_deleted = [
            await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) for _ in range(3)
        ]
        assert thinking_deleted == [[]] * 3
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
        # Before it, the refusals above deleted their public "thinking…": nothing withdrawn.
        read = [await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)]
        while read[-1] == []:
            read.append(await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S))
        assert read[-1] == [boat_job] and len(read) <= 3, read
        assert bot.queue.queued_count() == 0

        # A server's admin may restore a withdrawn job (audited); its maker may show it again.
        restore = "easel-admin restore"
        for job, answer in ((lighthouse, "Restored"), (lighthouse, "was not withdrawn")):
            restored = await reply_to(fake, restore, {"job": job}, user=fake.owner_id)
            assert restored.is_ephemeral and answer in restored.content, restored.content
        shown_again = await show(fake, lighthouse)
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        assert f"restore: — → 1 restored: {lighthouse}" in audit.content
        # A U1 post of it is one of its posts too: deleting it withdraws the job again.
        u1_post = await (await fake.click(shown_again, label="U1")).wait_for_original(has_picture)
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


def saved_again(message: StoredMessage, *, stored_turned: bool = False) -> bytes:
    """The message's picture as a member saves it again: a PNG without its text (or
    ``stored_turned``: its pixels turned a quarter, with the EXIF orientation that turns them
    back, shown and read as the picture)."""
    with Image.open(io.BytesIO(message.attachments[0].data)) as picture:
        buffer = io.BytesIO()
        if not stored_turned:
            picture.save(buffer, format="PNG")
            return buffer.getvalue()
        turn_back = Image.Exif()
        turn_back[ExifTags.Base.Orientation] = 6  # a quarter clockwise
        picture.transpose(Image.Transpose.ROTATE_90).save(
            buffer, format="PNG", exif=turn_back.tobytes()
        )
    return buffer.getvalue()


async def test_a_withdrawn_picture_uploaded_again_under_another_name_is_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its pixels name it: /blend and /vary refuse the copy of a withdrawn job's posted grid
    (a job of two pictures is posted, deleted and saved as that one picture), also one stored
    turned and told by its EXIF to turn back; a copy of a picture still shown is blended."""
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
        turned_copy = ("phone.png", saved_again(lighthouse, stored_turned=True))
        for refused in (
            await blend.wait_for_followup(),
            await reply_to(fake, "vary", {}, attachments={"image": copy}),
            await reply_to(fake, "vary", {}, attachments={"image": turned_copy}),
        ):
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert bot.queue.queued_count() == 0
        blended = await fake.invoke_command(
            "blend", {"prompt": "--steps 2"}, attachments={"image1": boat_copy, "image2": boat_copy}
        )
        await blended.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_an_upscale_made_from_the_menu_goes_with_its_source(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Upscale menu's job is made from the picture, as the button's is: one delivered is
    withdrawn with it, and one still starting when a moderator deletes the picture is stopped
    and refunded, posting nothing; the withdrawal is audited as Easel's, naming both, and a
    restore of the picture brings both back, saying so."""
    fake = fake_discord
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        source = await imagine(fake, "a lighthouse")
        menu = await fake.invoke_message_command("Upscale", source)
        delivered = job_id_of(await menu.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))
        started, gate = asyncio.Queue[str](), asyncio.Event()
        start_gate = bot.results.why_not_started

        async def held_at_its_start(job: FinishedJob) -> str | None:
            started.put_nowait(job.job_id)
            await gate.wait()
            return await start_gate(job)

        monkeypatch.setattr(bot.results, "why_not_started", held_at_its_start)
        in_flight = await fake.invoke_message_command("Upscale", source)
        held = await asyncio.wait_for(started.get(), RENDER_TIMEOUT_S)
        await fake.delete_messages(source)
        withdrawn = await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)
        gate.set()
        assert sorted(withdrawn) == sorted([job_id_of(source), delivered, held])
        ended = await in_flight.wait_for_original(lambda message: "Cancelled" in message.content)
        assert not has_picture(ended) and "no pictures were charged" in ended.content
        stored = await bot.services.history.job(held)
        assert stored is not None and stored.status == "cancelled"
        assert await bot.services.history.was_refunded(held)
        shown = await show(fake, delivered)
        assert shown.is_ephemeral and WITHDRAWN_PICTURE in shown.content
        audit = await reply_to(fake, "easel-admin audit", user=fake.owner_id)
        assert WITHDRAWAL_AUDITED_AS in audit.content and held in audit.content, audit.content
        assert "1 unfinished stopped" in audit.content
        restore = {"job": job_id_of(source)}
        restored = await reply_to(fake, "easel-admin restore", restore, user=fake.owner_id)
        assert "the 2 jobs withdrawn with it" in restored.content
        # One withdrawn in the same bulk delete comes back too (one moment): said so.
        assert "stays withdrawn" in restored.content and "same bulk delete" in restored.content
        assert has_picture(await show(fake, delivered))


async def test_a_sref_link_takes_its_parent_from_an_easel_post_or_else_from_pixels(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link to a file is the job its pixels are of, whatever the file is named (anyone may
    name one ``easel-<job>.png``); a link to Easel's post is of the job posted, even when its
    pixels match no job (stored before their digests were). Queued when a moderator deletes
    that job's post, each is withdrawn with it, and only with it."""
    fake = fake_discord
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        source, boat = await imagine(fake, "a lighthouse"), await imagine(fake, "a red boat")
        renamed = (f"easel-{job_id_of(source)}.png", saved_again(boat))
        file_of_boat = await fake.post_user_message("look", attachments=[renamed])
        gate = calls_held(bot.results, "why_not_started", monkeypatch)

        async def styled_by(link: str) -> None:
            styled = await fake.invoke_command(
                "imagine", {**QUICK, "prompt": f"a cat --sref {link}"}
            )
            queued = await styled.wait_for_answer()
            assert queued.content.startswith(("⏳ Queued", "🎨 Rendering")), queued.content

        async def no_digest_recorded(guild_id: int, digest: bytes) -> list[StoredJob]:
            return []

        await styled_by(file_of_boat.attachments[0].url)
        monkeypatch.setattr(bot.services.history, "jobs_with_picture", no_digest_recorded)
        await styled_by(source.jump_url)
        lines = await bot.services.history.unfinished(fake.user_id, guild_id=fake.guild_id)
        of_boat, of_source = (line.job_id for line in lines)
        for deleted, made_of_it in ((source, of_source), (boat, of_boat)):
            await fake.delete_messages(deleted)
            withdrawn = await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)
            assert sorted(withdrawn) == sorted([job_id_of(deleted), made_of_it])
        gate.set()


def picture_of_my_own() -> tuple[str, bytes]:
    """A member's own picture, no Easel picture."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "navy").save(buffer, format="PNG")
    return "mine.png", buffer.getvalue()


async def test_every_job_made_from_a_picture_is_stopped_with_it(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way of making a job from an Easel picture (its post, a link to it, or a copy
    uploaded under another name) makes the job its own: queued when a moderator deletes the
    picture, it is withdrawn with it."""
    fake = fake_discord
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        source = await imagine(fake, "a lighthouse")
        source_job = job_id_of(source)
        copy = (f"easel-{source_job}.png", saved_again(source))  # its own: its name is believed
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        control = await fake.invoke_message_command("Use as control", source)
        fields = modal_fields(await control.wait_for_modal())
        typed = {
            fields["Prompt (inline flags such as --ar work)"][0]: "a ring --steps 2",
            fields["Control type"][0]: "canny",
        }
        made = [
            await fake.submit_modal(control, typed),
            await fake.invoke_message_command("Use settings", source),
            await fake.invoke_command("use-settings", {}, attachments={"image": copy}),
            await fake.invoke_command("vary", {"prompt": "a boat"}, attachments={"image": copy}),
            await fake.invoke_command("upscale", {}, attachments={"image": copy}),
            await fake.invoke_command(
                "inpaint", {"prompt": "a cat"}, attachments={"image": copy, "mask": copy}
            ),
            await fake.invoke_command(
                "blend",
                {"prompt": "--steps 2"},
                attachments={"image1": picture_of_my_own(), "image2": copy},
            ),
            await fake.invoke_command(
                "imagine", {**QUICK, "prompt": f"a cat --sref {source.jump_url}"}
            ),
        ]
        for handle in made:
            queued = await handle.wait_for_answer()
            assert queued.content.startswith(("⏳ Queued", "🎨 Rendering")), queued.content
        unfinished = await bot.services.history.unfinished(fake.user_id, guild_id=fake.guild_id)
        assert len(unfinished) == len(made)
        await fake.delete_messages(source)
        withdrawn = await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)
        gate.set()
        assert sorted(withdrawn) == sorted([source_job, *(line.job_id for line in unfinished)])

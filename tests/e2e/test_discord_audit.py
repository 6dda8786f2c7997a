"""Holes found by the eighth stop's trust audit of the Discord surface, held shut through the
fake Discord."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.app import build
from bot.jobs.queue import JobQueue, Submission
from bot.policy.visibility import NO_COMMANDS_HERE, NOT_READABLE
from bot.settings import Settings
from cogs import region
from inference.describe import MAX_WAITING, Captioner
from inference.tiny import write_tiny_captioner
from inference.types import RenderRequest
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    has_picture,
    images_today,
    imagine,
    job_id_of,
    limit_daily_images,
    link_of,
    modal_fields,
    reply_to,
    with_web_server,
)
from tests.e2e.test_controlnet import edges_png
from tests.e2e.test_describe import picture
from tests.e2e.test_region import mask_form, region_offer
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import (
    ALL_PERMISSIONS,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_VIEW_CHANNEL,
)

TROLL = 6464
# A timeout leaves a member View Channel and Read Message History alone (Discord's permission
# rules; discord.py's ``permissions_for`` agrees): as a member's own overwrite in a channel.
TIMED_OUT = ALL_PERMISSIONS & ~(PERMISSION_VIEW_CHANNEL | PERMISSION_READ_MESSAGE_HISTORY)
_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")


def pinged(content: str, payload: Mapping[str, Any]) -> set[str]:
    """Whom Discord notifies for ``content`` sent with ``payload``'s ``allowed_mentions``
    (absent: every mention in the text): ``everyone``, ``role:<id>``, ``user:<id>``."""
    allowed = payload.get("allowed_mentions")
    parse = {"everyone", "roles", "users"} if allowed is None else set(allowed.get("parse", []))
    listed_users = set() if allowed is None else set(map(str, allowed.get("users", [])))
    listed_roles = set() if allowed is None else set(map(str, allowed.get("roles", [])))
    found: set[str] = set()
    if "everyone" in parse and ("@everyone" in content or "@here" in content):
        found.add("everyone")
    found |= {
        f"role:{role}"
        for role in _ROLE.findall(content)
        if "roles" in parse or role in listed_roles
    }
    found |= {
        f"user:{user}"
        for user in _USER.findall(content)
        if "users" in parse or user in listed_users
    }
    return found


def pings_of_messages_saying(fake: FakeDiscord, text: str) -> list[set[str]]:
    """Who each message (or edit) Easel sent with ``text`` in it notifies."""
    return [
        pinged(call.json["content"], call.json)
        for call in fake.calls
        if isinstance(call.json, dict) and text in str(call.json.get("content") or "")
    ]


async def test_a_prompt_cannot_make_easel_ping_everyone_or_a_role(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A result's caption quotes the prompt and mentions its maker: only its maker may be
    notified, never @everyone, @here or a role a member typed into the prompt (Discord would
    let Easel ping them where the member could not)."""
    fake = fake_discord
    prompt = f"@everyone @here <@&{fake.member_role_id}> <@{fake.owner_id}> a loud lighthouse"
    async with start_easel():
        await imagine(fake, prompt)
    sent = pings_of_messages_saying(fake, "a loud lighthouse")
    assert sent, "the result's caption quotes the prompt"
    for notified in sent:
        assert notified <= {f"user:{fake.user_id}"}, notified
    assert sent[-1] == {f"user:{fake.user_id}"}, "the maker is still told their result is in"


async def test_a_member_in_timeout_cannot_post_through_buttons_forms_or_the_mask_editor(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings
) -> None:
    """Discord keeps a member in timeout (or without Use Application Commands) from running
    commands, not from clicking buttons or submitting a form opened before, and not from
    opening a mask editor link: Easel holds them to it, since what it renders is posted in the
    channel under their name."""
    fake = fake_discord
    fake.add_member(TROLL, "troll", roles=(fake.member_role_id,))
    async with running_bot(fake, build(with_web_server(easel_settings_for_test))) as bot:
        result = await imagine(fake, "a quiet harbour")
        grid = await imagine(fake, "two boats", count=2)
        link = link_of(await region_offer(fake, result, TROLL))
        form = await fake.click(result, label="Remix", user=TROLL)
        fields = dict(modal_fields(await form.wait_for_modal()).values())

        fake.set_overwrite(fake.channel_id, TROLL, deny=TIMED_OUT, member=True)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        refusals = []
        for action in ("reroll", "vary", "upscale"):
            custom_id = next(c for c in result.custom_ids if c.startswith(f"easel:{action}:"))
            click = await fake.click(result, custom_id, user=TROLL)
            refusals.append(await click.wait_for_original(lambda m: not m.is_loading))
        pick = await fake.click(grid, label="U1", user=TROLL)  # posted in the channel too
        refusals.append(await pick.wait_for_original(lambda m: not m.is_loading))
        submitted = await fake.submit_modal(form, fields, user=TROLL)
        refusals.append(await submitted.wait_for_original(lambda m: not m.is_loading))
        for refusal in refusals:
            assert refusal.is_ephemeral and NO_COMMANDS_HERE in refusal.content, refusal.content
        async with (
            aiohttp.ClientSession() as http,
            http.post(link, data=mask_form(painted=True)) as posted,
        ):
            assert posted.status == 403 and NO_COMMANDS_HERE in await posted.text()
        assert await images_today(bot.services, TROLL, fake.guild_id) == 0
        assert (await bot.services.history.page(TROLL, 0, guild_id=fake.guild_id)).total == 0


async def test_results_are_posted_however_much_their_prompt_and_notes_quote(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A result's caption quotes the prompt (escaped: each ``_`` becomes ``\\_``) and notes
    that quote what the member gave (here: eight long made-up names /use-settings could not
    use). Over Discord's 2,000 characters the message was refused: the rendered and charged
    picture was never shown, and /show and DM me failed on it too."""
    fake = fake_discord
    fake.add_member(TROLL, "troll", roles=(fake.member_role_id,))
    unknown = ", ".join(f"Field {i} {'x' * 300}: 1" for i in range(8))
    async with start_easel():
        pasted = f"a tidy garden\nSteps: 2, Size: 64x64, {unknown}"
        handle = await fake.invoke_command("use-settings", {"infotext": pasted})
        noted = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        tagged = await imagine(fake, "x_" * 1000)
        copied = await fake.click(tagged, label="DM me", user=TROLL)
        told = await copied.wait_for_original(lambda m: not m.is_loading)
        shown = await reply_to(fake, "show", {"job_id": job_id_of(tagged)})
    assert "a tidy garden" in noted.content and "not used here: Field 0" in noted.content
    assert "Sent to your direct messages" in told.content
    copy = await fake.wait_for_channel_message(channel=fake.dm_channel_of(TROLL))
    for message in (noted, tagged, copy, shown):
        assert len(message.content) <= 2000 and message.attachments, message.content


async def test_a_fix_faces_prompt_read_from_settings_meets_the_servers_banned_words(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Settings from elsewhere may carry ADetailer's prompt, which each face is re-rendered
    with: the model is conditioned on it, so the server's banned words and the prompt cap
    hold for it as for the prompt (before, only the prompt and negative prompt were read)."""
    fake = fake_discord
    faces = "ADetailer model: haar frontal face, ADetailer denoising strength: 0.4"
    async with start_easel() as bot:
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "cat"}, user=fake.owner_id
        )
        banned = f"a portrait\nSteps: 2, Size: 64x64, {faces}, ADetailer prompt: a cat face"
        refused = await reply_to(fake, "use-settings", {"infotext": banned})
        assert refused.is_ephemeral and "The word 'cat' is banned" in refused.content
        too_long = f"a portrait\nSteps: 2, Size: 64x64, {faces}, ADetailer prompt: {'o' * 4001}"
        refused = await reply_to(fake, "use-settings", {"infotext": too_long})
        assert refused.is_ephemeral and "at most 4,000" in refused.content, refused.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0


async def test_a_use_as_control_form_is_checked_again_when_submitted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The picture is read when the form is submitted, up to 15 minutes after it opened: by
    then the member may no longer read the channel's messages (as a Remix form is checked)."""
    fake = fake_discord
    fake.add_member(TROLL, "troll", roles=(fake.member_role_id,))
    posted = await fake.post_user_message(
        "edges", user=fake.owner_id, attachments=[("edges.png", edges_png())]
    )
    async with start_easel() as bot:
        opened = await fake.invoke_message_command("Use as control", posted, user=TROLL)
        fields = modal_fields(await opened.wait_for_modal())
        prompt_id = fields["Prompt (inline flags such as --ar work)"][0]
        fake.set_overwrite(
            fake.channel_id, TROLL, deny=PERMISSION_READ_MESSAGE_HISTORY, member=True
        )
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        values = {**dict(fields.values()), prompt_id: "a ring"}
        submitted = await fake.submit_modal(opened, values, user=TROLL)
        refusal = await submitted.wait_for_original(lambda m: not m.is_loading)
        assert refusal.is_ephemeral and NOT_READABLE in refusal.content, refusal.content
        assert await images_today(bot.services, TROLL, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0


async def test_one_member_cannot_take_every_place_in_describes_queue(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/describe is free and its captioner takes 8 waiting pictures in all: one member sending
    8 at once kept everyone else out. A member waits for their picture's suggestions before
    their next /describe is taken, and it is refused before its picture (up to 10 MB) is
    downloaded."""
    fake = fake_discord
    fake.add_member(TROLL, "troll", roles=(fake.member_role_id,))
    captioner_dir = write_tiny_captioner(tmp_path / "captioner")
    settings = easel_settings(fake, tmp_path / "data", tiny_models_dir).model_copy(
        update={"captioner_dir": captioner_dir}
    )
    # The captioner is slow while the test sends: nothing it takes is done meanwhile.
    slow = threading.Event()
    describe = Captioner._describe

    def slow_describe(self: Captioner, png: bytes) -> list[str]:
        slow.wait(RENDER_TIMEOUT_S)
        return describe(self, png)

    monkeypatch.setattr(Captioner, "_describe", slow_describe)
    try:
        async with running_bot(fake, build(settings)):
            flood = [
                await fake.invoke_command(
                    "describe", {}, attachments={"image": picture()}, user=TROLL
                )
                for _ in range(MAX_WAITING)
            ]
            for handle in flood[1:]:
                refused = await handle.wait_for_original(lambda m: not m.is_loading)
                assert refused.is_ephemeral and "still being described" in refused.content
                [attachment] = handle.payload["data"]["options"]
                assert fake.cdn_bytes_served(int(attachment["value"])) == 0
            mine = await fake.invoke_command("describe", {}, attachments={"image": picture()})
            await mine.wait_for_ack()
            slow.set()
            described = await mine.wait_for_original(lambda m: "**1.**" in m.content)
            assert not described.is_ephemeral
            await flood[0].wait_for_original(lambda m: "**1.**" in m.content)
    finally:
        slow.set()


async def test_an_unknown_model_is_refused_at_submit_quoting_the_member_safely(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """An unknown ``--model`` was queued, failed at render (refunded) and was reported in the
    channel, quoting what the member typed. It is refused when submitted, privately, naming
    the models the member may use; the name is quoted as code (no masked link, no markdown)
    and bounded, so the sentence is sent even for 2,500 characters of it."""
    fake = fake_discord
    masked_link = "[free nitro](https://nitro.example/claim)"
    async with start_easel() as bot:
        linked = await reply_to(fake, "imagine", {"prompt": f'a cat --model "{masked_link}"'})
        long = await reply_to(fake, "imagine", {"prompt": "a cat --model " + "m" * 2500})
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
    for refused in (linked, long):
        assert refused.is_ephemeral and len(refused.content) <= 2000, refused.content
        assert "is not installed or not allowed here. You may use: tiny." in refused.content
    # As code, the brackets make no link and the address no preview: Discord shows them as typed.
    assert "`[free nitro](https://nitro.example/claim)`" in linked.content


async def test_a_model_that_is_not_installed_is_named_with_those_this_server_allows(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    """A model the server allows but whose files were removed since (an admin may allow only
    an installed one), or one removed since the job a button reuses, is refused at submit
    with one sentence naming the installed models this server allows (not another installed
    one it left out); nothing is queued or charged."""
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "old", "hidden", "retired"):
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    async with running_bot(fake, build(easel_settings(fake, tmp_path / "data", models))) as bot:
        for name in ("tiny", "old", "retired"):
            allowed = {"action": "add", "name": name}
            await reply_to(fake, "easel-admin model", allowed, user=fake.owner_id)
        (models / "retired").unlink()
        typed = await reply_to(fake, "imagine", {"prompt": "a cat", "model": "retired", **QUICK})
        result = await imagine(fake, "a dog", model="old")
        (models / "old").unlink()
        reroll = next(c for c in result.custom_ids if c.startswith("easel:reroll:"))
        clicked = await fake.click(result, reroll)
        reused = await clicked.wait_for_original(lambda m: not m.is_loading)
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
    assert typed.is_ephemeral and reused.is_ephemeral
    assert "`retired` is not installed or not allowed here. You may use: old, tiny." in (
        typed.content
    )
    assert "`old` is not installed or not allowed here. You may use: tiny." in reused.content


async def test_a_refusal_that_quotes_a_long_value_still_reaches_the_member(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A refusal names what was refused (here a 2,500-character model name typed as a flag):
    over Discord's 2,000 characters it was never sent, and the member only saw "interaction
    failed"; it is cut to fit instead."""
    fake = fake_discord
    async with start_easel() as bot:
        await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=fake.owner_id
        )
        refused = await reply_to(fake, "imagine", {"prompt": "a cat --model " + "m" * 2500})
        assert refused.is_ephemeral and "is not installed or not allowed here" in refused.content
        assert len(refused.content) <= 2000 and bot.queue.queued_count() == 0


async def test_a_refusal_after_a_public_thinking_reaches_only_the_member(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quota read from memory lets a job through and the ledger then refuses it (another
    job of the member's was admitted meanwhile): "thinking…" was already public, and Discord
    makes the first follow-up that reply whatever its flags, so the channel read the refusal.
    The public "thinking…" goes; the refusal is the member's alone."""
    fake = fake_discord

    async def memory_says_yes(queue: JobQueue, submission: Submission, jobs: int = 1) -> None:
        return None  # the other job's charge has not reached the figures in memory yet

    async with start_easel() as bot:
        await limit_daily_images(fake, 1)
        await imagine(fake, "a first lighthouse")
        monkeypatch.setattr(JobQueue, "quota_refusal", memory_says_yes)
        handle = await fake.invoke_command("imagine", {"prompt": "a second lighthouse", **QUICK})
        refusal = await handle.wait_for_followup(lambda m: "⛔" in m.content)
        assert refusal.is_ephemeral and "limit" in refusal.content, refusal.content
        assert handle.original is not None and handle.original.deleted
        assert bot.queue.queued_count() == 0
    public = [m for m in fake.messages.values() if not m.deleted and not m.is_ephemeral]
    assert not [m for m in public if "⛔" in m.content or "second" in m.content], public


async def test_easel_admin_show_fits_however_many_banned_words_a_server_has(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """``/easel-admin show`` lists every banned word: past 2,000 characters Discord refused the
    message and the admin saw "interaction failed". Each list is cut, saying how many it left
    out, and the whole listing comes as a file, still to the admin alone."""
    fake = fake_discord
    words = [f"forbidden{'abcdefghijklmnopqrstuvwxyz'[i % 26] * (i // 26 + 1)}" for i in range(120)]
    async with start_easel():
        for word in words:
            added = {"action": "add", "word": word}
            await reply_to(fake, "easel-admin banned-word", added, user=fake.owner_id)
        shown = await reply_to(fake, "easel-admin show", user=fake.owner_id)
    assert shown.is_ephemeral and len(shown.content) <= 2000, len(shown.content)
    listed = shown.content.count("||forbidden")
    assert 0 < listed < len(words)
    assert f"… and {len(words) - listed} more (all in easel-settings.txt)" in shown.content
    (attached,) = shown.attachments
    assert attached.filename == "easel-settings.txt"
    assert all(f"||{word}||" in attached.data.decode() for word in words)


async def test_a_remix_form_fits_a_job_whose_prompt_is_longer_than_a_form_takes(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A job journaled before prompts were capped at 4,000 characters (the journal keeps
    jobs for the retention period) has a longer prompt than a form's field takes: Discord
    refused the Remix form and the member saw "interaction failed". The form opens with the
    prompt cut to fit, and its label says so."""
    fake = fake_discord
    prompt = "a very patient lighthouse keeper, " * 130  # 4,420 characters
    async with start_easel() as bot:
        old = Submission(
            kind="imagine",
            request=RenderRequest(prompt, "", seed=5, steps=2, width=64, height=64),
            user_id=fake.user_id,
            guild_id=fake.guild_id,
            channel_id=fake.channel_id,
        )
        job_id = await bot.queue.submit(old)
        result = await fake.wait_for_channel_message(
            lambda m: job_id in m.content and bool(m.attachments), timeout=RENDER_TIMEOUT_S
        )
        opened = await fake.click(result, label="Remix")
        fields = modal_fields(await opened.wait_for_modal())
    label, (_, shown) = next((k, v) for k, v in fields.items() if k.startswith("Prompt"))
    assert label == "Prompt (cut to 4,000 characters)" and shown == prompt[:4000]


async def test_a_member_in_timeout_is_refused_before_their_region_in_words_is_segmented(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    region_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Segmenting a region described in words takes the bot's CPU (CLIPSeg) and writes a
    mask: a member in timeout submitting a form opened before is refused before that, not
    after it."""
    fake = fake_discord
    fake.add_member(TROLL, "troll", roles=(fake.member_role_id,))
    segmented: list[str] = []
    segment = region.segment

    def counted_segment(models_dir: Path, picture: Path, words: str) -> Image.Image:
        segmented.append(words)
        return segment(models_dir, picture, words)

    monkeypatch.setattr(region, "segment", counted_segment)
    settings = easel_settings(fake, tmp_path / "data", region_models_dir)
    async with running_bot(fake, build(settings)):
        result = await imagine(fake, "a quiet harbour")
        form = await fake.click(result, label="Vary (Region)", user=TROLL)
        fields = modal_fields(await form.wait_for_modal())
        fake.set_overwrite(fake.channel_id, TROLL, deny=TIMED_OUT, member=True)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        words_id = fields["What to repaint (e.g. the sky)"][0]
        submitted = await fake.submit_modal(form, {words_id: "the sky"}, user=TROLL)
        refusal = await submitted.wait_for_original(lambda m: not m.is_loading)
    assert refusal.is_ephemeral and NO_COMMANDS_HERE in refusal.content, refusal.content
    assert segmented == []


async def test_a_result_posted_after_its_token_expired_pings_only_its_maker(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Past its token's 15 minutes a result is posted in the channel instead, its caption
    quoting the prompt. Whom it may notify is spelled out in the call, not left to the
    client's default (a webhook without a client has none: Discord then parses @everyone and
    roles)."""
    fake = fake_discord
    prompt = f"@everyone @here <@&{fake.member_role_id}> <@{fake.owner_id}> a late lighthouse"
    async with start_easel() as bot:
        bot.allowed_mentions = None  # only what each call says reaches Discord
        posted = await deliver_after_token_expiry(fake, bot, prompt)
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is not None
    [sent] = [
        call.json
        for call in fake.calls_to("POST", "/channels/{channel}/messages")
        if "a late lighthouse" in str(call.json.get("content"))
    ]
    assert pinged(sent["content"], sent) == {f"user:{fake.user_id}"}, sent["allowed_mentions"]

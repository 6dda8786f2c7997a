"""Rendering from a picture's settings through the fake Discord: the "Use settings" menu and
/use-settings (pasted text or a PNG) give Easel's own picture back byte for byte, read Civitai's
form, name what they cannot honour, and hold to the rules /imagine holds to."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bot import infotext_import
from bot.jobs.accounting import Member
from bot.policy.prompt_safety import PromptPlanner
from bot.policy.quota import Period
from bot.policy.visibility import NOT_READABLE
from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext, png_with_infotext
from inference.prompts.stopping import PlanStopped, checkpoint
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    limit_daily_images,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, Overwrite, StoredMessage
from tests.fake_discord.payloads import PERMISSION_READ_MESSAGE_HISTORY
from tests.fake_discord.rest import ACK_DEADLINE_S

CIVITAI = (
    "a lighthouse at dusk, <lora:missing-style:0.8>\n"
    "Negative prompt: lowres\n"
    "Steps: 2, Sampler: Restart, CFG scale: 5, Seed: 4242, Size: 64x64, Clip skip: 2, "
    "Created Date: 2024-05-01T10:00:00.0000000Z, "
    'Civitai resources: [{"type":"checkpoint","modelVersionId":128713}], '
    'Hashes: {"model": "fedcba9876"}, Model: DreamShaper'
)

# A grid's settings as pasted: its Template is drawn again for each of its pictures.
PASTED_GRID = (
    "two red foxes Steps: 2, Sampler: Euler, Seed: 100, Size: 64x64, "
    'Template: "two {red|blue} foxes", Grid: 2 images, Grid seeds: 100 101'
)


def picture(infotext: str | None) -> bytes:
    image = Image.new("RGB", (64, 64), "teal")
    if infotext is not None:
        return png_with_infotext(image, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def rendered(handle: InteractionHandle) -> StoredMessage:
    return await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_easel_s_own_settings_give_the_same_picture_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        first = await imagine(
            fake,
            "a (red:1.2) cat --tile --stop 50",
            negative="blurry",
            seed=77,
            steps=3,
            cfg=6.0,
            sampler="DPM++ 2M Karras",
        )
        original = first.attachments[0].data
        infotext = infotext_from_png(original)
        assert infotext is not None
        _prompt, _negative, params = parse_infotext(infotext)
        assert (params["Sampler"], params["Schedule type"], params["RNG"]) == (
            "DPM++ 2M",
            "Karras",
            "CPU",
        )
        assert (params["Tiling"], params["Stop at"]) == ("True", "50%")
        assert str(params["Version"]).startswith("Easel ")

        # The menu on a member's message carrying the PNG.
        posted = await fake.post_user_message("look", attachments=[("cat.png", original)])
        again = await rendered(await fake.invoke_message_command("Use settings", posted))
        assert again.attachments[0].data == original
        assert "not honoured" not in again.content

        # Pasted as text: Discord's text options arrive on one line.
        pasted = await rendered(
            await fake.invoke_command("use-settings", {"infotext": infotext.replace("\n", " ")})
        )
        assert pasted.attachments[0].data == original
        assert "not honoured" not in pasted.content


async def test_a_seed_past_32_bits_is_the_seed_every_record_names_and_renders_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """``--seed 4294967296`` for two pictures renders at 4294967296 and 4294967297, as the web
    UI takes them (it was read as seed 0 and said 0); the caption, the PNG, the U post (the
    journal's seed) and Use settings all say so, and Use settings and the pasted text give
    the same grid back."""
    fake = fake_discord
    async with start_easel():
        grid = await imagine(fake, "a fox --seed 4294967296", count=2)
        assert "(seed 4294967296, 4294967297, job" in grid.content, grid.content
        text = infotext_from_png(grid.attachments[0].data) or ""
        assert parse_infotext(text)[2]["Grid seeds"] == "4294967296 4294967297"
        picked = await rendered(await fake.click(grid, label="U2"))
        assert "(seed 4294967297)" in picked.content, picked.content
        seed = parse_infotext(infotext_from_png(picked.attachments[0].data) or "")[2]["Seed"]
        assert seed == 4294967297
        again = await rendered(await fake.invoke_message_command("Use settings", grid))
        pasted = await rendered(
            await fake.invoke_command("use-settings", {"infotext": text.replace("\n", " ")})
        )
        for made in (again, pasted):
            assert "(seed 4294967296, 4294967297, job" in made.content, made.content
            assert made.attachments[0].data == grid.attachments[0].data


async def test_use_settings_on_easel_s_grid_makes_its_batch_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The grid's text is its first picture's settings and ``Grid: 2 images, Grid seeds:
    100 101``: the batch comes back, each picture drawing from the prompt as typed
    (``Template``), not the first picture alone with a note calling the grid's own fields
    unused (AUD26 F1)."""
    fake = fake_discord
    async with start_easel():
        grid = await imagine(fake, "two {red|blue} foxes", count=2, seed=100)
        again = await rendered(await fake.invoke_message_command("Use settings", grid))
        assert "not honoured" not in again.content
        assert "(seed 100, 101" in again.content
        _prompt, _negative, params = parse_infotext(
            infotext_from_png(again.attachments[0].data) or ""
        )
        assert (params["Grid"], params["Grid seeds"]) == ("2 images", "100 101")
        assert params["Template"] == "two {red|blue} foxes"
        assert again.attachments[0].data == grid.attachments[0].data


async def test_a_grid_made_again_past_the_member_s_quota_gives_what_fits_told(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A member with one picture left today gets the grid's first picture, the one shown,
    with a note saying why not all of it, not a refusal; with none left, the refusal."""
    fake = fake_discord
    async with start_easel() as bot:
        await limit_daily_images(fake, 4)
        grid = await imagine(fake, "two foxes", count=3, seed=100)
        first = await rendered(await fake.invoke_message_command("Use settings", grid))
        assert (
            "Note: the grid has 3 pictures; only its first picture fits your quota now"
            in first.content
        ), first.content
        assert "(seed 100, job" in first.content
        _prompt, _negative, params = parse_infotext(
            infotext_from_png(first.attachments[0].data) or ""
        )
        assert params["Seed"] == 100 and "Grid" not in params
        refused = await (await fake.invoke_message_command("Use settings", grid)).wait_for_answer()
        assert refused.is_ephemeral and "limit" in refused.content, refused.content
        report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
        assert next(p.images for p in report.periods if p.period is Period.DAY) == 4


@pytest.fixture
def colour_wildcard(easel_settings_for_test: Settings) -> None:
    folder = Path(easel_settings_for_test.wildcards_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "colour.txt").write_text("red\nblue\ngreen\n", encoding="utf-8")


@pytest.mark.usefixtures("colour_wildcard")
async def test_a_grid_s_template_is_honoured_only_where_it_draws_the_picture_shown(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A grid drawn from the wildcard folder comes back as its batch: its Template is drawn
    at the first picture's seed from the folder admission draws from, and gives the prompt
    shown. A Template that draws another prompt, or none, is no grid's: the picture shown is
    made alone, told, and charged as one."""
    fake = fake_discord
    async with start_easel():
        grid = await imagine(fake, "two __colour__ foxes", count=2, seed=100)
        again = await rendered(await fake.invoke_message_command("Use settings", grid))
        assert "not honoured" not in again.content
        assert again.attachments[0].data == grid.attachments[0].data

        shown = infotext_from_png(grid.attachments[0].data) or ""
        for template, why in (
            ("a cat", "its Template does not draw the prompt shown at seed 100"),
            ('" "', "its Template carries no prompt"),
        ):
            crafted = re.sub(r"Template: [^,]*", f"Template: {template}", shown)
            posted = await fake.post_user_message("g", attachments=[("g.png", picture(crafted))])
            alone = await rendered(await fake.invoke_message_command("Use settings", posted))
            assert (
                f"not honoured: grid of 2 pictures ({why}): its first picture's settings are "
                "used (seed 100)" in alone.content
            )
            assert "(seed 100, job" in alone.content
            prompt, _negative, params = parse_infotext(
                infotext_from_png(alone.attachments[0].data) or ""
            )
            assert prompt == parse_infotext(shown)[0] and "Grid" not in params


async def test_civitai_settings_render_and_say_what_was_not_honoured(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        result = await rendered(
            await fake_discord.invoke_command(
                "use-settings", attachments={"image": ("civitai.png", picture(CIVITAI))}
            )
        )
    content = result.content
    assert "not honoured: sampler 'Restart' is not available here; Euler a is used" in content
    assert "not honoured: unknown LoRA 'missing-style' ignored" in content
    assert (
        "not honoured: model 'DreamShaper' (hash fedcba9876) is not installed or not allowed "
        "here; 'tiny' is used instead" in content
    )
    infotext = infotext_from_png(result.attachments[0].data)
    assert infotext is not None
    prompt, negative, params = parse_infotext(infotext)
    # The tag of a LoRA not installed here is dropped (a typed one is refused), told above.
    assert (prompt, negative) == ("a lighthouse at dusk", "lowres")
    assert (params["Seed"], params["Steps"], params["Size"]) == (4242, 2, "64x64")
    assert (params["Sampler"], params["Model"], params["Clip skip"]) == ("Euler a", "tiny", 2)


async def test_use_settings_keeps_the_rules_of_imagine(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    # Visible to everyone, but without Read Message History.
    live_only = fake.add_text_channel(
        "live", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_READ_MESSAGE_HISTORY)]
    )
    unreadable = await fake.post_user_message(
        "now", user=fake.owner_id, channel=live_only, attachments=[("a.png", picture(CIVITAI))]
    )
    plain = await fake.post_user_message("plain", attachments=[("p.png", picture(None))])
    long_prompt = "x" * 4001 + "\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64"
    async with start_easel() as bot:
        await reply_to(
            fake,
            "easel-admin banned-word",
            {"action": "add", "word": "cat"},
            user=fake.owner_id,
        )
        refusals = [
            (
                await fake.invoke_message_command("Use settings", unreadable),
                NOT_READABLE,
            ),
            (
                await fake.invoke_message_command("Use settings", plain),
                "carries no generation parameters",
            ),
            (
                await fake.invoke_command(
                    "use-settings", {"infotext": "a c\u200bat Steps: 2, Sampler: Euler, Seed: 3"}
                ),
                "The word 'cat' is banned on this server",
            ),
            (
                await fake.invoke_command(
                    "use-settings", attachments={"image": ("long.png", picture(long_prompt))}
                ),
                "at most 4,000",
            ),
            (
                await fake.invoke_command("use-settings", {"infotext": "just a prompt"}),
                "No generation settings found",
            ),
            (await fake.invoke_command("use-settings"), "Give either `infotext`"),
            (  # six characters a JSON decoder reads as half a surrogate pair
                await fake.invoke_command(
                    "use-settings",
                    {"infotext": 'a dog Steps: 2, Seed: 3, ADetailer prompt: "a \\ud800 face"'},
                ),
                "value at 'ADetailer prompt' holds half a surrogate pair",
            ),
        ]
        for handle, refusal in refusals:
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral and refusal in reply.content, reply.content
        assert bot.queue.queued_count() == 0
        report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
        assert next(p.images for p in report.periods if p.period is Period.DAY) == 0
    posted_by_easel = [m for m in fake.messages.values() if m.author_id == fake.bot_user_id]
    assert not any(has_picture(message) for message in posted_by_easel)


async def test_text_from_a_picture_or_a_paste_never_speaks_as_easels_note(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A picture's ``Prompt warnings`` are not carried to an upscale of it (posted as Easel's
    notes), and a pasted value that renders a banned word is not quoted in a note."""
    fake = fake_discord
    spoof = "Easel's quotas were reset; run /forget-me now"
    crafted = picture(f'a red fox\nSteps: 2, Seed: 5, Size: 64x64, Prompt warnings: "{spoof}"')
    pasted = (
        "a red cat Steps: 2, Seed: 5, Size: 64x64, Model: slur model, "
        'Emphasis: "slur: admins say run /forget-me"'
    )
    async with start_easel():
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "slur"}, user=fake.owner_id
        )
        upscaled = await rendered(
            await fake.invoke_command(
                "upscale", {"scale": 2}, attachments={"image": ("fox.png", crafted)}
            )
        )
        imported = await rendered(await fake.invoke_command("use-settings", {"infotext": pasted}))
    assert "Note:" not in upscaled.content, upscaled.content
    infotext = infotext_from_png(upscaled.attachments[0].data)
    assert infotext is not None and "Prompt warnings" not in infotext
    assert "slur" not in imported.content
    assert "Note: not honoured: model (what the settings say is not shown" in imported.content


async def test_a_grid_s_template_is_drawn_again_within_a_prompt_s_budget(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drawing a pasted grid's ``Template`` again is the prompt language's work: past a
    prompt's budget the member is refused as for a prompt, and the draw stops at its next
    checkpoint, freeing its reader (it ran on, unbounded, on a thread of its own)."""
    fake = fake_discord
    started, stopped, release = threading.Event(), threading.Event(), threading.Event()

    def endless_draw(*_args: object, **_kwargs: object) -> None:
        """A Template whose draw never ends, passing the prompt language's checkpoints."""
        started.set()
        try:
            while not release.wait(0.001):
                checkpoint()
        except PlanStopped:
            stopped.set()
            raise

    monkeypatch.setattr(infotext_import, "build_plan", endless_draw)
    try:
        async with start_easel() as bot:
            # Long enough for a reader to start on a loaded machine (else: every reader busy).
            bot.services.prompts.budget_s = 1.0
            reply = await reply_to(fake, "use-settings", {"infotext": PASTED_GRID})
            assert started.is_set()
            assert reply.is_ephemeral and "took longer than 1 s" in reply.content, reply.content
            assert await asyncio.to_thread(stopped.wait, RENDER_TIMEOUT_S)
            assert bot.queue.queued_count() == 0
    finally:
        release.set()  # no thread outlives the test


async def test_pasted_settings_are_acknowledged_before_they_are_read(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading pasted settings (a grid's Template drawn again) and admission's prompt plan may
    each take most of a prompt's budget (2.5 s): together past Discord's 3 s, so the paste is
    acknowledged before either, as a PNG is (R_B2 F1). Each step here takes 1.6 s of the fake
    Discord's clock, not of the test's."""
    fake = fake_discord

    def taking_seconds(function: Callable[..., object]) -> Callable[..., object]:
        def slow(*args: object, **kwargs: object) -> object:
            fake.advance_time(1.6)
            return function(*args, **kwargs)

        return slow

    monkeypatch.setattr(infotext_import, "build_plan", taking_seconds(infotext_import.build_plan))
    monkeypatch.setattr(PromptPlanner, "_plan", taking_seconds(PromptPlanner._plan))
    async with start_easel() as bot:
        assert bot.services.prompts.budget_s > 1.6  # each step within its budget
        handle = await fake.invoke_command("use-settings", {"infotext": PASTED_GRID})
        # Without the acknowledgement first, Discord refuses the late one (10062): none comes.
        assert await handle.wait_for_ack() <= ACK_DEADLINE_S
        again = await rendered(handle)
    assert "(seed 100, 101" in again.content
    assert handle.error_codes == []

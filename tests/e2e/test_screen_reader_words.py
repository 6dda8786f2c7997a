"""What a screen reader hears of a result, as Discord receives it (audit AUD28): each
picture's description (the grid says where each of U1-U4 is, each picture posted alone which U
it was; none repeats the prompt, which a member may keep private), and a word on every button
(a screen reader says an emoji's name: "counterclockwise arrows button", not "Reroll")."""

from __future__ import annotations

from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import RENDER_TIMEOUT_S, has_picture, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.rules import walk_components

PROMPT = "my grandmother's secret soup"


def descriptions(message: StoredMessage) -> list[str | None]:
    return [attachment.description for attachment in message.attachments]


def button_words(message: StoredMessage) -> dict[str, tuple[str | None, str | None]]:
    """Each button's label and emoji, by its custom_id."""
    return {
        str(button["custom_id"]): (button.get("label"), (button.get("emoji") or {}).get("name"))
        for button in walk_components(message.components)
        if button.get("type") == 2
    }


async def test_every_picture_says_its_job_and_which_picture_of_the_grid_it_is(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        await reply_to(fake, "settings", {"results_by_dm": True})
        grid = await imagine(fake, PROMPT, count=3)
        job = job_id_of(grid)
        assert descriptions(grid) == [
            f"3 pictures of job {job}, 2 across and 2 down: U1 top left, U2 top right, "
            "U3 bottom left; the bottom right is empty."
        ]
        each = [
            f"Picture {n} of job {job}: U{n}, {place} in its grid."
            for n, place in ((1, "top left"), (2, "top right"), (3, "bottom left"))
        ]
        dm_channel = fake.dm_channel_of(fake.user_id)
        copy = await fake.wait_for_channel_message(
            has_picture, timeout=RENDER_TIMEOUT_S, channel=dm_channel
        )
        assert descriptions(copy) == each  # the copy by DM
        picked = await (await fake.click(grid, label="U2")).wait_for_original(has_picture)
        assert descriptions(picked) == [each[1]]
        shown = await reply_to(fake, "show", {"job_id": job})
        assert descriptions(shown) == each
        asked = await fake.click(picked, label="DM me")
        await asked.wait_for_original(lambda m: "Sent to your direct messages" in m.content)
        [one] = [
            m
            for m in fake.messages.values()
            if m.channel_id == dm_channel and m.id != copy.id and has_picture(m)
        ]
        assert descriptions(one) == [each[1]]
        single = await imagine(fake, PROMPT)
        one_job = job_id_of(single)
        assert descriptions(single) == [f"The picture of job {one_job}."]

        # Every button says what it does in words, its emoji beside them.
        words = {**button_words(grid), **button_words(single), **button_words(picked)}
        assert all(label for label, _ in words.values()), words
        assert words[f"easel:reroll:{job}"] == ("Reroll", "🔄")
        assert words[f"easel:reroll:{job}:1"] == ("Reroll", "🔄")  # under U2: that picture
        pans = {f"easel:expand:{one_job}:0:{way}": way for way in ("left", "right", "up", "down")}
        arrows = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
        for custom_id, way in pans.items():
            assert words[custom_id] == (f"Pan {way}", arrows[way])

"""/forget-me takes down the copies of the member's pictures that other members asked for with
DM me (each holds the picture and its settings, negative prompt included), as a moderator's
withdrawal does; the member's own copies by DM stay, theirs to delete, and the answer says
which go and which stay. Through the fake Discord with a real tiny render."""

from __future__ import annotations

from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, forget_me
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.pictures import has_picture
from tests.support.polling import until

OTHER = 7202


async def dm_copy(fake: FakeDiscord, result: StoredMessage, user: int) -> StoredMessage:
    """The copy ``user`` gets by clicking DM me on ``result``."""
    asked = await fake.click(result, label="DM me", user=user)
    await asked.wait_for_original(lambda m: "Sent to your direct messages" in m.content)
    dm = fake.dm_channel_of(user)
    [copy] = [m for m in fake.messages.values() if m.channel_id == dm and has_picture(m)]
    return copy


async def test_forget_me_deletes_the_copies_others_asked_for_by_dm_not_the_members_own(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    private = fake.add_text_channel("two-of-us", visible_to=(fake.user_id, OTHER))
    async with start_easel():
        made = await fake.invoke_command(
            "imagine",
            {"prompt": "a quiet owl", "negative": "a hidden word", **QUICK},
            channel=private,
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        others_copy = await dm_copy(fake, result, OTHER)
        own_copy = await dm_copy(fake, result, fake.user_id)

        forget = await forget_me(fake)
        forgotten = await forget.wait_for_original(lambda m: not m.is_loading)
        assert "Removing 2 posted messages from channels" in forgotten.content
        assert "Copies other members asked for with DM me go" in forgotten.content
        assert "Copies sent to you by direct message stay" in forgotten.content
        await until(lambda: result.deleted and others_copy.deleted)
        told = await forget.wait_for_original(lambda m: "Removed" in m.content)
        assert "Removed 2 of 2 posted messages" in told.content
        assert not own_copy.deleted

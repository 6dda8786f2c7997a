"""A channel the server's admins close to Easel after a result was posted there: every button
under the result, every message menu on it and /info on a copy (Info reads the job's prompt)
are refused there, the same way, before anything is posted, sent, read from the journal or
queued, or a form opens; the maker may still delete their post."""

from __future__ import annotations

from tests.e2e.helpers import StartEasel, images_today, imagine, reply_to
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage

CLOSED = "Easel is not enabled in this channel"
MENUS = ("Vary", "Upscale", "Use settings", "Use as control", "Info")


def _public_messages(fake: FakeDiscord) -> set[int]:
    return {m.id for m in fake.messages.values() if not m.is_ephemeral and not m.deleted}


async def refused(handle: InteractionHandle) -> StoredMessage:
    answer = await handle.wait_for_original(lambda m: not m.is_loading)
    assert answer.is_ephemeral and CLOSED in answer.content, answer
    assert handle.modal is None
    return answer


async def test_a_closed_channel_refuses_every_button_and_menu_of_its_results(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    art = fake.add_text_channel("art")
    async with start_easel() as bot:
        grid = await imagine(fake, "two lighthouses", count=2)
        single = await imagine(fake, "one lighthouse")
        await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
        )
        charged = await images_today(bot.services, fake.user_id, fake.guild_id)
        public = _public_messages(fake)

        # Every button but Delete: U1-U2, V1-V2, 🔄, Vary, Upscale, Zoom Out and the pans,
        # Vary (Region), Fix faces, Remix, DM me.
        buttons = [
            (message, custom_id)
            for message in (grid, single)
            for custom_id in message.custom_ids
            if not custom_id.startswith("easel:delete:")
        ]
        assert len(buttons) == 7 + 14
        for message, custom_id in buttons:
            await refused(await fake.click(message, custom_id))
        for menu in MENUS:
            await refused(await fake.invoke_message_command(menu, single))
        # /info on a copy of the result, whose prompt it would read from the journal.
        [copy] = single.attachments
        await refused(
            await fake.invoke_command("info", attachments={"image": (copy.filename, copy.data)})
        )

        # Nothing posted in any channel nor sent by DM, nothing queued or charged.
        assert _public_messages(fake) == public
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == charged

        # The maker may still take their picture down there.
        deleting = await fake.click(grid, label="Delete")
        await deleting.wait_for_original_deleted()
        assert grid.deleted

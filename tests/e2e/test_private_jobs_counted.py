"""A member's private job (seen by its maker alone) withdrawn along with another's public one
is counted, never named, wherever the withdrawal is told (AUD21): /easel-mod withdraw counted
it, but /easel-admin restore named it, and the audit log kept its id in the withdrawal's row
and the restore's."""

from __future__ import annotations

from tests.e2e import helpers
from tests.e2e.helpers import StartEasel, has_picture, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS

PRIVATE_MAKER, MODERATOR = 7201, 7203
MANAGE_MESSAGES = 1 << 13


async def test_a_private_job_withdrawn_and_restored_with_a_public_one_is_never_named(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(PRIVATE_MAKER, "quiet", roles=(fake.member_role_id,))
    fake.add_member(MODERATOR, "mod", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    async with start_easel() as bot:
        public = await imagine(fake, "a castle")
        public_id = job_id_of(public)
        await reply_to(fake, "settings", {"private_results": True}, user=PRIVATE_MAKER)
        clicked = await fake.click(public, label="Vary (Strong)", user=PRIVATE_MAKER)
        varied = await clicked.wait_for_original(has_picture, timeout=helpers.RENDER_TIMEOUT_S)
        private_id = job_id_of(varied)
        assert await bot.services.history.is_private(private_id)

        withdrew = await reply_to(fake, "easel-mod withdraw", {"job": public_id}, user=MODERATOR)
        assert "1 more job" in withdrew.content and private_id not in withdrew.content

        owner = fake.owner_id
        restored = await reply_to(fake, "easel-admin restore", {"job": public_id}, user=owner)
        assert restored.content.startswith(f"Restored job `{public_id}`"), restored.content
        assert private_id not in restored.content
        assert (
            "withdrawn with it (made from it, or with its pixels): 1 private job (not named)."
            in restored.content
        ), restored.content
        audit = (await reply_to(fake, "easel-admin audit", user=owner)).content
        assert private_id not in audit, audit
        assert f"2 restored: {public_id} and 1 private job (not named)" in audit, audit
        withdrawal = "(copies by DM too): {} and 1 private job (not named)"
        assert withdrawal.format(public_id) in audit, audit

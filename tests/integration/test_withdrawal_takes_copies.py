"""What a moderator's withdrawal takes with it, on a real SQLite journal: the finished jobs made
from its pictures (not a 🔄 of it or a Use settings, linked to it for the prompt or settings
alone; but a 🔄 or Remix of a variation, which reads its picture again), its other posts and
the copies Easel sent by DM, left to delete (one recorded just after it too; none found deleted
meanwhile); a result Easel withholds leaves its posts; a restore brings back what was taken,
not the deleted posts."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from bot.history import History
from bot.policy.member_settings import MemberSettings
from db import history as store
from db import jobs as journal
from db.history import PostedMessage, Withdrawal
from inference.infotext import format_infotext
from inference.types import RenderRequest
from tests.integration.test_withdrawn_results import (
    CHANNEL,
    GUILD,
    MEMBER,
    MODERATOR,
    NOW,
    delivered,
)

GRID, VARIED, REROLLED, SETTINGS = "a" * 16, "b" * 16, "c" * 16, "d" * 16
REROLL_OF_V1, REMIX_OF_IT = "e" * 16, "f" * 16
DM_CHANNEL, OTHER_CHANNEL = 900, 60


def styled_by(job_id: str) -> dict[str, object]:
    """A request that reads ``job_id``'s stored picture (an image prompt: ``job_inputs``)."""
    return {"ipadapter": {"images": [f"/images/{job_id}.png"]}}


async def pending(conn: aiosqlite.Connection) -> list[PostedMessage]:
    return list(await store.pending_post_deletes(conn, NOW + 10))


def moderators() -> store.WithdrawalAudit:
    """A moderator's withdrawal (audited: its text is not read here)."""
    return store.WithdrawalAudit(MODERATOR, "withdrawn", lambda taken: "audited")


async def test_a_withdrawal_takes_what_is_made_from_its_pictures_and_its_copies(
    conn: aiosqlite.Connection,
) -> None:
    await delivered(conn, GRID, 100)
    await delivered(conn, VARIED, 102, kind="vary", parent=GRID, options=styled_by(GRID))
    # A 🔄 reads what its parent read (here the grid's own picture): made for the prompt.
    rerolled = styled_by(GRID)
    await delivered(conn, REROLLED, 103, kind="reroll", parent=GRID, options=rerolled)
    await delivered(conn, SETTINGS, 104, parent=GRID)  # Use settings: reads no picture
    # A copy by DM of the grid, recorded once however often it is sent.
    await store.record_copy(conn, GRID, PostedMessage(DM_CHANNEL, 901))
    assert await store.record_copy(conn, GRID, PostedMessage(DM_CHANNEL, 901))  # sent again
    audited: list[Withdrawal] = []

    def describe(taken: Withdrawal) -> str:
        audited.append(taken)
        return "audited"

    audit = store.WithdrawalAudit(MODERATOR, "withdrawn", describe)
    withdrawn = await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [100], NOW + 1, audit)

    assert sorted(withdrawn) == [GRID, VARIED]
    # The deleted post is not asked again; the variation's post and the copy by DM are.
    assert await pending(conn) == [PostedMessage(CHANNEL, 102), PostedMessage(DM_CHANNEL, 901)]
    assert await store.posts_of(conn, REROLLED) == (PostedMessage(CHANNEL, 103),)
    [taken] = audited
    assert (taken.made_from_pictures, taken.posts_to_delete) == (1, 2)
    assert taken.older_twins == []
    # A copy sent once the job is withdrawn is left to delete at once.
    assert not await store.record_copy(conn, GRID, PostedMessage(DM_CHANNEL, 902))
    assert PostedMessage(DM_CHANNEL, 902) in await pending(conn)

    restored = await store.restore_job(
        conn, GRID, GUILD, admin_id=MODERATOR, now=NOW + 2, describe="{} {}".format
    )
    assert restored == [GRID, VARIED]
    assert await store.posts_of(conn, VARIED) == ()  # deleted: not linked again


async def test_a_withheld_result_leaves_its_posts_and_copies(conn: aiosqlite.Connection) -> None:
    await delivered(conn, GRID, 100)
    await store.record_copy(conn, GRID, PostedMessage(DM_CHANNEL, 901))
    await store.withdraw_job(conn, GRID, NOW + 1, withheld_why="a word banned since")
    assert await pending(conn) == []
    assert await store.posts_of(conn, GRID) == (PostedMessage(CHANNEL, 100),)


async def test_a_post_found_deleted_is_never_deleted_again(conn: aiosqlite.Connection) -> None:
    """A post a withdrawal left to delete, found deleted before the sweep deleted it (a
    moderator deleting it too, by hand, or with its channel): not asked of Discord again."""
    await delivered(conn, GRID, 100)
    await journal.record_job_message(conn, GRID, 101, posted_in=(GUILD, CHANNEL))
    await journal.record_job_message(conn, GRID, 201, posted_in=(GUILD, OTHER_CHANNEL))
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [100], NOW + 1, moderators())
    assert await pending(conn) == [PostedMessage(CHANNEL, 101), PostedMessage(OTHER_CHANNEL, 201)]
    # Its id in another channel is another message: that one stays to delete.
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [201], NOW + 2, moderators())
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [101], NOW + 2, moderators())
    assert await pending(conn) == [PostedMessage(OTHER_CHANNEL, 201)]
    await store.withdraw_channel_results(conn, GUILD, OTHER_CHANNEL, NOW + 3)
    assert await pending(conn) == []


async def test_a_post_recorded_just_after_the_withdrawal_is_left_to_delete(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A /show or U1 racing the moderator's Delete, recorded after the withdrawal: unlinked
    and left to delete (its caller deletes it: ``link_post_again``)."""
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: NOW + 2)
    await delivered(conn, GRID, 100)
    job = await history.job(GRID)
    assert job is not None
    assert await history.posted_again(job, CHANNEL, 101)  # before: linked, stays
    await store.withdraw_deleted_results(conn, GUILD, CHANNEL, [100], NOW + 1, moderators())
    assert not await history.posted_again(job, CHANNEL, 555)
    assert await pending(conn) == [PostedMessage(CHANNEL, 101), PostedMessage(CHANNEL, 555)]
    assert await store.posts_of(conn, GRID) == ()


async def test_a_copy_sent_before_the_delivery_is_marked_is_taken(
    conn: aiosqlite.Connection,
) -> None:
    """Results by DM: the copy is sent and recorded before the queue marks the delivery; the
    moderator deletes the result in between."""
    request = RenderRequest("a dog", seed=1, steps=2)
    await journal.insert_job(
        conn, journal.NewJob(GRID, "imagine", MEMBER, GUILD, CHANNEL, request.to_json(), NOW)
    )
    infotext = format_infotext("a dog", "", {"Steps": 2})
    picture = journal.ImageRecord(GRID, 0, 1, f"/images/{GRID}.png", infotext, 64, 64)
    await journal.mark_done(conn, GRID, [picture], 0.1, NOW)
    await journal.record_job_message(conn, GRID, 100, posted_in=(GUILD, CHANNEL))
    assert await store.record_copy(conn, GRID, PostedMessage(DM_CHANNEL, 901))
    withdrawn = await store.withdraw_deleted_results(
        conn, GUILD, CHANNEL, [100], NOW + 1, moderators()
    )
    assert withdrawn == [GRID]
    assert await pending(conn) == [PostedMessage(DM_CHANNEL, 901)]


async def test_a_reroll_of_a_carried_variation_is_carried_not_a_reroll_of_the_grid(
    conn: aiosqlite.Connection,
) -> None:
    """A 🔄 or Remix of V1 reads V1's picture, the grid's (V1's request, a new seed); a 🔄 of
    the grid reads what the grid read, not the grid's picture."""
    await delivered(conn, GRID, 100, options=styled_by("upload"))
    await delivered(conn, VARIED, 102, kind="vary", parent=GRID, options=styled_by(GRID))
    await delivered(conn, REROLLED, 103, kind="reroll", parent=GRID, options=styled_by("upload"))
    await delivered(conn, REROLL_OF_V1, 104, kind="reroll", parent=VARIED, options=styled_by(GRID))
    await delivered(
        conn, REMIX_OF_IT, 105, kind="remix", parent=REROLL_OF_V1, options=styled_by(GRID)
    )
    withdrawn = await store.withdraw_deleted_results(
        conn, GUILD, CHANNEL, [100], NOW + 1, moderators()
    )
    assert sorted(withdrawn) == sorted([GRID, VARIED, REROLL_OF_V1, REMIX_OF_IT])
    assert await pending(conn) == [PostedMessage(CHANNEL, m) for m in (102, 104, 105)]
    assert await store.posts_of(conn, REROLLED) == (PostedMessage(CHANNEL, 103),)
    restored = await store.restore_job(
        conn, GRID, GUILD, admin_id=MODERATOR, now=NOW + 2, describe="{} {}".format
    )
    assert sorted(restored) == sorted(withdrawn)

"""History for the cogs: pages of a member's jobs, one job's pictures, and /forget-me."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiosqlite

from bot.forget_me_log import ForgetMeLog
from bot.jobs import accounting
from bot.jobs.queue import JobCopies
from bot.jobs.retention import DAY_S, quota_window, remove_unread_results
from bot.jobs.stored_files import (
    files_left,
    pictures_by_folder,
    remove_inside,
    remove_result_folders,
    stored_file,
)
from bot.memo import ExpiringKeys
from bot.policy.member_settings import MemberSettings
from bot.policy.moderation import ConditioningTexts, conditioning_texts
from bot.user_errors import UserError, counted
from db import erasures
from db import history as store
from db import jobs as journal
from db import quotas as ledger
from db.database import write_back_log
from db.erasures import Erasure as Erasure  # for the cogs, which never import db
from db.erasures import ReplyToken as ReplyToken
from db.history import MODERATOR_WITHDRAWAL_AUDITED_AS as MODERATOR_WITHDRAWAL_AUDITED_AS
from db.history import MemberJobsHere as MemberJobsHere
from db.history import PostedMessage as PostedMessage

PAGE_SIZE = 5
# The same pixels in more jobs than this (one seed rendered again and again) are checked
# against the withdrawn ones and the newest only.
PIXEL_MATCHES = 8
_PROMPTS = ("prompt", "negative_prompt")  # a request's own texts, planned at each submit
# /forget-me defers its answer, so the broker's copies may take this long to go (what is left
# there expires within 24 h, and the member is told so).
BROKER_ERASE_S = 5.0
# /forget-me's delete of a post that Discord refused (a channel hidden from Easel, an archived
# thread) or failed is tried again after the first wait, doubled at each failure up to the
# longest, until it failed this many times (at least 2: the first try, the member's, is never
# the last); then it is given up.
POST_DELETE_FIRST_WAIT_S = 15 * 60.0
POST_DELETE_LONGEST_WAIT_S = 24 * 3600.0
POST_DELETE_TRIES = 12
# Messages deleted in a server's channel, and deleted channels, are remembered this long (at
# most this many), so that a post of a job recorded just after its deletion (or its channel's)
# was announced still withdraws it.
DELETIONS_KEPT_S = 60.0
DELETIONS_KEPT = 4096
# A deletion heard while a moderator's Delete click on that post is under way waits this long
# for the click's answer (Discord's retries can take minutes); then it withdraws the job as
# Easel's.
CLICK_ANSWER_WAIT_S = 30.0
# The setting name of the audit row (/easel-admin audit) of a moderator's withdrawal.
WITHDRAWAL_AUDITED_AS = "jobs withdrawn (their post deleted)"
# Results Easel withheld at delivery, refunded (a rule changed during the render, or they could
# not be posted where they were made: Easel removed, a hidden thread with DMs closed...): listed
# in the audit, so that an admin undoing a mistaken rule finds the ids to restore. Not why:
# that is told to each maker alone.
WITHHELD_AUDITED_AS = "results withheld when they were finished (not posted, refunded)"
# Job ids an audit row or a reply names; past them, how many more (a purge or a deleted
# channel withdraws thousands, and /easel-admin audit shows 15 rows in one message).
IDS_LISTED = 10

log = logging.getLogger(__name__)


def listed_ids(job_ids: Sequence[str], private: Collection[str] = frozenset()) -> str:
    """``job_ids`` for an audit row or a reply: the first ``IDS_LISTED``, then how many more;
    those among ``private`` (their maker's alone) counted, never named, as /easel-mod counts
    them (``store.private_among``)."""
    named = [job_id for job_id in job_ids if job_id not in private]
    listed = ", ".join(named[:IDS_LISTED])
    if (more := len(named) - IDS_LISTED) > 0:
        listed += f" and {more} more"
    if hidden := len(job_ids) - len(named):
        not_named = f"{counted(hidden, 'private job')} (not named)"
        listed = f"{listed} and {not_named}" if listed else not_named
    return listed


def _withdrawal_audited(taken: store.Withdrawal) -> str:
    withdrawn = taken.job_ids
    counts = f"{len(withdrawn)} withdrawn, {taken.unfinished} unfinished stopped and refunded"
    if taken.made_from_pictures:
        counts += f", {taken.made_from_pictures} finished made from their pictures"
    if taken.posts_to_delete:
        counts += f", {counted(taken.posts_to_delete, 'other post')} deleted (copies by DM too)"
    twins = listed_ids(taken.older_twins, taken.private)
    older = f"; older jobs with their pixels still stand: {twins}" if taken.older_twins else ""
    return f"{counts}: {listed_ids(withdrawn, taken.private)}{older}"


def _withheld_audited(taken: store.Withdrawal) -> str:
    """A withheld result's row names its job even when private: an admin undoing a mistaken
    rule restores it by that id, and the audit is read by the server's admins alone
    (``/easel-admin audit``, Manage Server), never by moderators, from whom private jobs stay
    hidden; the id alone shows no prompt nor picture."""
    return _withdrawal_audited(replace(taken, private=frozenset()))


def post_delete_retry_wait_s(failures: int) -> float:
    """How long a post's delete waits after its ``failures``-th failure (1 or more)."""
    return min(POST_DELETE_FIRST_WAIT_S * 2.0 ** (failures - 1), POST_DELETE_LONGEST_WAIT_S)


def post_delete_retry_days() -> int:
    """From a post's first failed delete to its last try, in whole days."""
    waits = (post_delete_retry_wait_s(failures) for failures in range(1, POST_DELETE_TRIES))
    return round(sum(waits) / DAY_S)


@dataclass(frozen=True)
class HistoryLine:
    job_id: str
    status: str
    prompt: str
    created_at: float
    image_count: int
    withdrawn: bool = False  # a moderator deleted its result: it is not shown again
    # Withdrawn by Easel: its result was withheld at delivery (the server's rules changed, or
    # it could not be posted where it was made).
    withheld: bool = False
    # Why, as its maker was told (``History.withhold_job``): on the maker's own list alone.
    withheld_why: str | None = None
    # Queued or running in a backup put back: ended unrendered, refunded (``bot.restores``).
    lost_in_a_restore: bool = False


def _history_line(entry: store.HistoryEntry, *, own: bool) -> HistoryLine:
    """``entry`` as a list shows it; ``own``: to its maker, who may read why it was withheld
    (they were told by DM), which a moderator's list leaves out."""
    return HistoryLine(
        entry.job_id,
        entry.status,
        str(json.loads(entry.request_json).get("prompt", "")),
        entry.created_at,
        entry.image_count,
        entry.withdrawn,
        entry.withheld_why is not None,
        entry.withheld_why if own else None,
        entry.lost_in_a_restore,
    )


def _page_count(total: int) -> int:
    return max(1, -(-total // PAGE_SIZE))


@dataclass(frozen=True)
class HistoryPage:
    lines: list[HistoryLine]
    page: int  # 0-based
    page_count: int
    total: int


@dataclass(frozen=True)
class PageAnchor:
    """Where a page turn reads from (keyset: as fast on the last of 3,000 pages as on the
    first): the job next to the page it turns to, the last of the page before it (``older``:
    a turn to the next page) or the first of the page after it."""

    job_id: str
    older: bool


@dataclass(frozen=True)
class ModeratedPage:
    """A page of a member's public jobs in a server made in the channels a moderator
    moderates (``History.moderated_page``), each with Easel's posts of it still linked, and
    how many of the member's other jobs there were left out: public ones made elsewhere (or
    where not recorded), and private ones (the member's alone)."""

    jobs: HistoryPage
    posts: dict[str, tuple[PostedMessage, ...]]
    left_out_elsewhere: int
    left_out_private: int


@dataclass(frozen=True)
class ModeratorWithdrawal:
    """What a moderator's withdrawal by id or by member (``/easel-mod withdraw``, Cancel)
    took: every job newly withdrawn; of them those asked for (the job of that id; the member's
    public jobs made in the channels the moderator moderates), which the moderator is told by
    id, the others having gone with them (another member's, a private one, one made
    elsewhere: counted only); and those of them stopped while queued or rendering
    (refunded to their makers)."""

    job_ids: list[str]
    asked: list[str]
    stopped: Sequence[str]


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    user_id: int
    guild_id: int | None  # None: made in a direct message
    private: bool
    spoiler: bool
    status: str
    prompt: str
    image_paths: list[Path]
    seeds: list[int]
    infotexts: list[str]
    channel_id: int | None = None  # where it was made (None: not recorded)
    # What its pictures were conditioned on: the prompts as typed and as each one rendered
    # (its fix-faces prompt drawn for each picture only when read: ``conditioning_texts``).
    texts: ConditioningTexts = field(default_factory=ConditioningTexts)
    withdrawn: bool = False  # a moderator deleted its result, or Easel withheld it
    # Withdrawn by Easel, not a moderator: withheld at delivery (``History.withhold_job``).
    withheld: bool = False
    # Its request's prompt and negative prompt as typed (of ``texts``).
    prompt_texts: ConditioningTexts = field(default_factory=ConditioningTexts)
    age_restricted: bool = False  # made in an age-restricted channel (journaled)
    thread_parent_id: int | None = None  # made in a thread: its channel (journaled)

    def texts_to_recheck(self, *, resubmitted: bool) -> ConditioningTexts:
        """Of ``texts``, those to read for the server's banned words of now before reusing a
        picture; a button that submits the job's request again (``resubmitted``) has its
        prompt and negative prompt planned at admission anyway, so only the others (drawn
        wildcards, a fix-faces prompt) are read first."""
        if not resubmitted:
            return self.texts
        return self.texts.without(self.prompt_texts)


@dataclass(frozen=True)
class Restored:
    """What ``History.restore`` brought back: whether the job has pictures to show again (one
    stopped before it rendered has none), and the jobs withdrawn with it that came back too."""

    has_pictures: bool
    with_it: list[str]


@dataclass(frozen=True)
class Forgotten:
    """What a /forget-me request erased, in all its runs (one a stop interrupted, then the
    next start's or the member's again). ``ledger_rows_deferred`` still count towards the
    member's current quota periods: they lose the member's id at ``deferred_until``."""

    jobs: int
    pictures: int
    uploads: int
    ledger_rows_anonymised: int
    ledger_rows_deferred: int
    deferred_until: float
    # The posts of every run of the request (an earlier run's are deleted by the start's
    # sweep of those pending), and when it was asked (``History.erasure_told``).
    all_posts: int
    asked_at: float
    # The broker could not be reached: its copies of the member's jobs expire within 24 h.
    broker_copies_left: bool = False
    # Easel's posts of the jobs this run erased in servers, and of the member's jobs retention
    # deleted before (``pruned_posts``), for the caller to delete from Discord (the database no
    # longer links them to anything, so their deletions withdraw nothing), each left pending
    # until ``History.post_delete_settled``.
    posts: tuple[PostedMessage, ...] = ()


# Tells a /forget-me's member what their request erased (``History.forget``'s ``tell``).
TellErased = Callable[[Forgotten], Awaitable[None]]
# Tells a /forget-me's member that their request failed part way (``History.forget``'s
# ``failed``).
TellFailed = Callable[[Exception], Awaitable[None]]


def _saved_up_to(erasure: Erasure) -> float | None:
    """Where ``erasure``'s erase stops taking settings, presets and refusals: a re-erase's
    (``Erasure.again``) at its request, so that what the member saved since stays, also on
    the sweep's retry of one that failed; none for a member's own request."""
    return erasure.asked_at if erasure.again else None


def _erased_withdrawn_job(guild_id: int) -> StoredJob:
    """A job of ``guild_id`` a moderator withdrew, erased since by its maker's /forget-me:
    only its pixels are known (``withdrawn_pictures``), and that it is withdrawn."""
    return StoredJob(
        job_id="",
        user_id=0,
        guild_id=guild_id,
        private=False,
        spoiler=False,
        status="done",
        prompt="",
        image_paths=[],
        seeds=[],
        infotexts=[],
        withdrawn=True,
    )


class History:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        images_dir: Path,
        inputs_dir: Path,
        member_settings: MemberSettings,
        clock: Callable[[], float] = time.time,
        copies: JobCopies | None = None,  # the broker's, when renders run on one
        # Each /forget-me recorded outside the database too (None: not, and a database put
        # back from an older backup brings back what it erased).
        forget_me_log: ForgetMeLog | None = None,
    ) -> None:
        self._conn = conn
        self._forget_me_log = forget_me_log
        # The requests (member, asked_at) this process recorded: a retry of a failing erase,
        # every sweep, adds no line (a restart records again: the run that stopped may not have).
        self._recorded_requests: set[tuple[int, float]] = set()
        self._images_dir = images_dir
        self._inputs_dir = inputs_dir
        self._member_settings = member_settings
        self._clock = clock
        self._copies = copies
        # Set by the composition root: stops the withdrawn jobs still queued or rendering,
        # returning those stopped (``JobQueue.stop_withdrawn``; unset: their results are
        # withheld at delivery only), and Easel's own user, who writes the audit row of a
        # moderator's withdrawal (unset: none is written).
        self.stop_withdrawn: Callable[[Sequence[str]], Awaitable[Sequence[str]]] | None = None
        self.easel_id: int | None = None
        # Set by the composition root: wakes the deletes of posts left to delete
        # (``pending_post_deletes``), as a moderator's withdrawal leaves its jobs' other posts
        # and copies by DM (unset: the next sweep deletes them).
        self.posts_left_to_delete: Callable[[], None] = lambda: None
        # Set by the composition root: the channel a thread is in (None: not a thread, or not
        # known), recorded with a post there, since deleting that channel deletes the thread.
        self.thread_parent: Callable[[int], int | None] = lambda _channel_id: None
        # (guild, channel, message) of the messages lately deleted in servers' channels.
        self._deleted: ExpiringKeys[tuple[int, int, int]] = ExpiringKeys(
            DELETIONS_KEPT_S, DELETIONS_KEPT
        )
        # (guild, channel) of the channels and threads lately deleted in servers.
        self._deleted_channels: ExpiringKeys[tuple[int, int]] = ExpiringKeys(
            DELETIONS_KEPT_S, DELETIONS_KEPT
        )
        # The posts moderators' Delete clicks are deleting now: an event per click, set once
        # it is answered (``withdraw_deleted`` waits for them).
        self._deleting: dict[tuple[int, int, int], list[asyncio.Event]] = {}
        # The members whose /forget-me request is being erased or answered now: set when it
        # ends.
        self._erasing_now: dict[int, asyncio.Event] = {}

    async def page(
        self,
        user_id: int,
        page: int,
        search: str | None = None,
        *,
        guild_id: int | None,
        next_to: PageAnchor | None = None,
    ) -> HistoryPage:
        """Page ``page`` (clamped to the last one) of the member's jobs in the guild (None:
        direct messages), newest first: results belong to the server they were made in. A
        turn from a shown page reads the jobs ``next_to`` its edge (keyset), numbered by where
        they stand now (jobs made or erased since that page was shown move it). Else by
        number (each job before it read): the page asked where there is no edge, or the
        edge's job is gone or finds none older (jobs erased since); the first page (the
        newest jobs) where the turn is to it, or finds less than a page newer than its edge."""
        if next_to is not None and page > 0:
            entries = await store.page_next_to(
                self._conn,
                user_id,
                next_to.job_id,
                older=next_to.older,
                guild_id=guild_id,
                search=search,
                limit=PAGE_SIZE,
            )
            if entries and (next_to.older or len(entries) == PAGE_SIZE):
                return await self._page_at(user_id, entries, guild_id=guild_id, search=search)
            if entries is not None and not next_to.older:
                page = 0
        total = await store.count_of_jobs(self._conn, user_id, guild_id=guild_id, search=search)
        page_count = _page_count(total)
        page = min(max(page, 0), page_count - 1)
        entries = await store.page_of_jobs(
            self._conn,
            user_id,
            guild_id=guild_id,
            search=search,
            limit=PAGE_SIZE,
            offset=page * PAGE_SIZE,
        )
        lines = [_history_line(entry, own=True) for entry in entries]
        return HistoryPage(lines, page, page_count, total)

    async def _page_at(
        self,
        user_id: int,
        entries: list[store.HistoryEntry],
        *,
        guild_id: int | None,
        search: str | None,
    ) -> HistoryPage:
        """The page of ``entries`` (read next to an edge), numbered by the jobs before it:
        behind n jobs it is page ceil(n / PAGE_SIZE), so that its label and ◀ ▶ agree with
        the jobs it shows (◀ off only with none newer, ▶ only with none older), and a page
        out of step with the pages by number (jobs made since) does not hide the newest."""
        around = await store.count_of_jobs_around(
            self._conn, user_id, entries[0], guild_id=guild_id, search=search
        )
        page = -(-around.newer // PAGE_SIZE)
        page_count = page + _page_count(around.total - around.newer)
        lines = [_history_line(entry, own=True) for entry in entries]
        return HistoryPage(lines, page, page_count, around.total)

    async def member_jobs_here(self, guild_id: int, user_id: int) -> MemberJobsHere:
        """How many jobs the member made in ``guild_id``: public ones by channel, and
        private ones, for a moderator's list (``moderated_page``)."""
        return await store.member_jobs_here(self._conn, guild_id, user_id)

    async def moderated_page(
        self,
        guild_id: int,
        user_id: int,
        here: MemberJobsHere,
        moderated: Collection[int],
        page: int,
    ) -> ModeratedPage:
        """Page ``page`` (clamped to the last one) of the member's public jobs in
        ``guild_id`` made in the ``moderated`` channels (of ``here``, ``member_jobs_here``),
        newest first, for a moderator: never a private one, nor one made elsewhere."""
        total = sum(here.public_by_channel.get(channel_id, 0) for channel_id in moderated)
        page_count = _page_count(total)
        page = min(max(page, 0), page_count - 1)
        entries = await store.page_of_public_jobs(
            self._conn, guild_id, user_id, moderated, limit=PAGE_SIZE, offset=page * PAGE_SIZE
        )
        posts = {entry.job_id: await store.posts_of(self._conn, entry.job_id) for entry in entries}
        return ModeratedPage(
            HistoryPage(
                [_history_line(entry, own=False) for entry in entries], page, page_count, total
            ),
            posts,
            left_out_elsewhere=sum(here.public_by_channel.values()) - total,
            left_out_private=here.private,
        )

    async def job(self, job_id: str) -> StoredJob | None:
        record = await journal.get_job(self._conn, job_id)
        if record is None:
            return None
        images = await journal.images_of(self._conn, job_id)
        request = json.loads(record.request_json)
        infotexts = [image.infotext for image in images]
        return StoredJob(
            job_id=record.id,
            user_id=record.user_id,
            guild_id=record.guild_id,
            private=record.private,
            spoiler=record.spoiler,
            status=record.status.value,
            prompt=str(request.get("prompt", "")),
            image_paths=[stored_file(self._images_dir.parent, image.path) for image in images],
            seeds=[image.seed for image in images],
            infotexts=infotexts,
            channel_id=record.channel_id,
            texts=conditioning_texts(request, infotexts),
            withdrawn=record.withdrawn_at is not None,
            withheld=record.withheld_why is not None,
            prompt_texts=conditioning_texts({key: request.get(key) for key in _PROMPTS}, []),
            age_restricted=record.age_restricted,
            thread_parent_id=record.thread_parent_id,
        )

    async def jobs_with_picture(self, guild_id: int, *pixel_digests: bytes) -> list[StoredJob]:
        """The jobs of ``guild_id`` one of whose pictures has these pixels
        (``bot.images.pixel_digest``; an upload's as stored and as shown), at most
        ``PIXEL_MATCHES`` a digest, as an upload of them reads them: ``withdrawn`` only where
        that refuses the upload (``db.jobs.jobs_with_picture``), those first (and before them
        one withdrawn and erased since, known by its pixels alone), then by digest, each job
        once."""
        found: dict[str, StoredJob] = {}
        erased_withdrawn = False
        for pixel_digest in pixel_digests:
            matches = await journal.jobs_with_picture(
                self._conn, guild_id, pixel_digest, PIXEL_MATCHES
            )
            for job_id, refuses in matches:
                if (refuses or job_id not in found) and (job := await self.job(job_id)) is not None:
                    found[job_id] = replace(job, withdrawn=refuses)
            if not erased_withdrawn:
                erased_withdrawn = await journal.erased_picture_withdrawn(
                    self._conn, guild_id, pixel_digest
                )
        # Stable: each digest's order (newest first) is kept.
        ordered = sorted(found.values(), key=lambda job: not job.withdrawn)
        return [_erased_withdrawn_job(guild_id), *ordered] if erased_withdrawn else ordered

    async def pixels_withdrawn(self, job_id: str, guild_id: int) -> bool:
        """Whether one of the job's pictures has the pixels of a job of ``guild_id`` that a
        moderator withdrew (also one erased since): the same picture, made again."""
        return await journal.pixels_withdrawn(self._conn, job_id, guild_id)

    async def withdraw_deleted(
        self,
        guild_id: int,
        channel_id: int,
        message_ids: Collection[int],
        *,
        by: int | None = None,
    ) -> list[str]:
        """Messages deleted in a server's channel: the jobs whose result one of them was are
        withdrawn (returned), so their pictures are not shown or used again. Each deletion
        is remembered a while (before the write: a post recorded meanwhile is then seen by
        either), for a post Easel records just after it (``_recorded``). Audited as ``by``'s
        (the moderator whose Delete click deleted it), else as Easel's. A post that Delete
        clicks are deleting now (``deleting``: its event may come first) waits for their
        answers, at most ``CLICK_ANSWER_WAIT_S``, so that the click whose delete landed
        withdraws it as its moderator's (another click's answer is a 404); the other posts
        are withdrawn first, without waiting."""
        now = self._clock()
        for message_id in message_ids:
            self._deleted.add((guild_id, channel_id, message_id), now)
        clicked: set[int] = set()
        if by is None:
            clicked = {m for m in message_ids if (guild_id, channel_id, m) in self._deleting}
        unclicked = [message_id for message_id in message_ids if message_id not in clicked]
        withdrawn = await self._stopped(
            await store.withdraw_deleted_results(
                self._conn, guild_id, channel_id, unclicked, now, self._audit(by)
            )
        )
        if clicked:
            posts = [(guild_id, channel_id, message_id) for message_id in clicked]
            if not await self._clicks_answered(posts):
                log.warning(
                    "posts %s: deleted while a moderator's Delete click on them is still "
                    "unanswered after %.0f s; their jobs are withdrawn as Easel's",
                    sorted(clicked),
                    CLICK_ANSWER_WAIT_S,
                )
            # Finds nothing new where a click's delete landed: it withdrew the job first.
            withdrawn += await self._stopped(
                await store.withdraw_deleted_results(
                    self._conn, guild_id, channel_id, clicked, now, self._audit(by)
                )
            )
        return withdrawn

    async def _clicks_answered(self, posts: Collection[tuple[int, int, int]]) -> bool:
        """Wait for the answers of the Delete clicks deleting ``posts`` now (``deleting``);
        False when one is still unanswered after ``CLICK_ANSWER_WAIT_S``."""
        clicks = [click.wait() for post in posts for click in self._deleting.get(post, ())]
        try:
            async with asyncio.timeout(CLICK_ANSWER_WAIT_S):
                await asyncio.gather(*clicks)
        except TimeoutError:
            return False
        return True

    @contextmanager
    def deleting(self, post: tuple[int, int, int]) -> Iterator[None]:
        """A moderator's Delete click deletes ``post`` (guild, channel, message) now, and
        withdraws its job as theirs if its delete lands: its deletion's event, heard
        meanwhile, waits for the click's answer (``withdraw_deleted``)."""
        answered = asyncio.Event()
        self._deleting.setdefault(post, []).append(answered)
        try:
            yield
        finally:
            answered.set()
            clicks = self._deleting[post]
            clicks.remove(answered)
            if not clicks:
                del self._deleting[post]

    def deleting_now(self, post: tuple[int, int, int]) -> bool:
        """Whether a moderator's Delete click is deleting ``post`` now (``deleting``)."""
        return post in self._deleting

    async def deleted_by_moderators(self, post: tuple[int, int, int]) -> bool:
        """Once the moderators' Delete clicks deleting ``post`` now are answered (at most
        ``CLICK_ANSWER_WAIT_S``): whether it is gone (its deletion heard), or still being
        deleted. False: their deletes failed (refused, or Discord's error), and it stays."""
        answered = await self._clicks_answered([post])
        gone = self._deleted.holds(post, self._clock())
        return gone or not answered or self.deleting_now(post)

    async def withdraw_by_moderator(self, job_id: str, by: int) -> ModeratorWithdrawal:
        """A moderator ``by`` withdraws a server's job (``/easel-mod withdraw``, or Cancel
        on its progress message), as deleting its post would (``withdraw_job``): stopped and
        refunded if unfinished, audited as theirs."""
        withdrawn = await store.withdraw_job(
            self._conn,
            job_id,
            self._clock(),
            audit=self._audit(by, MODERATOR_WITHDRAWAL_AUDITED_AS),
        )
        asked = [job_id] if job_id in withdrawn else []
        return ModeratorWithdrawal(withdrawn, asked, await self._stop(withdrawn))

    async def withdraw_member_jobs(
        self, guild_id: int, user_id: int, moderated: Collection[int], by: int
    ) -> ModeratorWithdrawal:
        """A moderator ``by`` withdraws the member's public jobs in ``guild_id`` made in the
        ``moderated`` channels, as ``withdraw_by_moderator`` does each, but not the member's
        private jobs (``store.withdraw_public_jobs``)."""
        if not moderated:
            return ModeratorWithdrawal([], [], ())
        withdrawn, asked = await store.withdraw_public_jobs(
            self._conn,
            guild_id,
            user_id,
            moderated,
            self._clock(),
            store.WithdrawalAudit(by, MODERATOR_WITHDRAWAL_AUDITED_AS, _withdrawal_audited),
        )
        return ModeratorWithdrawal(withdrawn, asked, await self._stop(withdrawn))

    async def withdraw_deleted_channel(self, guild_id: int, channel_id: int) -> list[str]:
        """A server's channel or thread deleted, its messages with it (Discord announces none
        of them): the jobs posted there are withdrawn (returned) as their posts' deletions
        would withdraw them, and one Easel records as posted there a moment later too."""
        now = self._clock()
        self._deleted_channels.add((guild_id, channel_id), now)
        withdrawn = await store.withdraw_channel_results(
            self._conn, guild_id, channel_id, now, self._audit()
        )
        await self._stop(withdrawn)
        # Its kept posts (thousands: batches) only once its queued jobs are stopped, which a
        # failure here must not skip; the channel stays recorded for the next retention round.
        try:
            await store.forget_posts_of_deleted_channels(self._conn)
        except Exception:
            log.exception("a deleted channel's kept posts: left to the next retention round")
        return withdrawn

    def message_deleted_lately(self, guild_id: int, channel_id: int, message_id: int) -> bool:
        """Whether Easel heard of this message's deletion in a server's channel lately, or of
        its channel's."""
        now = self._clock()
        return self._deleted.holds(
            (guild_id, channel_id, message_id), now
        ) or self._deleted_channels.holds((guild_id, channel_id), now)

    def channel_deleted_lately(self, guild_id: int, channel_id: int) -> bool:
        """Whether Easel heard of the deletion of this channel or thread lately. A thread of a
        deleted channel is here only when discord.py announced it (a cached one): its cache
        forgets the thread's parent before any listener runs, so an uncached thread is left to
        Discord's answer (``fetch_channel``: 10003)."""
        return self._deleted_channels.holds((guild_id, channel_id), self._clock())

    async def withdraw_job(self, job_id: str, deleted: tuple[int, int, int] | None) -> list[str]:
        """A server's job whose public progress message an edit found deleted, ``deleted``:
        (guild, channel, message id) where known (None: "thinking…", deleted before its first
        edit landed, never recorded as its post): withdrawn as Easel hearing of that deletion
        withdraws it (``withdraw_deleted``: the post unlinked, so that no later look for it
        finds it gone and withdraws a restored job again, and its deletion remembered), and by
        its id where it was not recorded as its post, with what is made from it (returned);
        both in one transaction."""
        now = self._clock()
        if deleted is not None:
            self._deleted.add(deleted, now)  # before the write, as ``withdraw_deleted`` does
        withdrawn = await store.withdraw_job_of_deleted_post(
            self._conn, job_id, deleted, now, self._audit()
        )
        return await self._stopped(withdrawn)

    async def withhold_job(self, job_id: str, why: str) -> list[str]:
        """A job (of a server, or in direct messages) whose result was withheld and refunded
        at delivery, its maker told ``why`` (the rules changed during its render, or they
        could not be read): withdrawn as ``withdraw_job`` does, since a picture given back is
        shown later to no one, but as Easel's doing, not a moderator's
        (``StoredJob.withheld``)."""
        withdrawn = await store.withdraw_job(
            self._conn,
            job_id,
            self._clock(),
            withheld_why=why,
            audit=self._audit(setting=WITHHELD_AUDITED_AS, describe=_withheld_audited),
        )
        return await self._stopped(withdrawn)

    async def unserved_listing(
        self, job_id: str, user_id: int, why: str, at_most: int, servers_at_most: int
    ) -> list[tuple[str, int]] | None:
        """The jobs, each with its server, that the DM about ``job_id`` (withheld for its
        server left out) names, as recorded for good (``journal.unserved_listing``: it, and
        its maker's other jobs that ended with ``why`` in any server, unposted and named in
        no DM yet); None: a DM sent already names it (``unserved_listing_told``), or another
        job's will; empty: the job is not journaled."""
        return await journal.unserved_listing(
            self._conn, job_id, user_id, why, at_most, servers_at_most
        )

    async def unserved_listing_told(self, job_id: str) -> None:
        """The DM about ``job_id`` naming its listing went: no delivery sends it again."""
        await journal.unserved_listing_told(self._conn, job_id, self._clock())

    async def unserved_listing_failed(self, job_id: str) -> None:
        """The DM about ``job_id`` naming its listing failed (not for DMs closed): its other
        jobs are named by the DMs of their own deliveries (``journal.unserved_listing_failed``)."""
        await journal.unserved_listing_failed(self._conn, job_id)

    async def made_private(self, job_id: str) -> None:
        """A job its delivery posts privately, its maker keeping results private since its
        submit, where the row says public (a fallback: the save and the admission mark such
        jobs): private from now on wherever ``private`` is read (``journal.make_private``)."""
        await journal.make_private(self._conn, job_id)

    async def is_private(self, job_id: str) -> bool:
        """Whether the job is private now: submitted so, or made so by its maker's /settings
        since (``journal.make_undelivered_private``), for good."""
        return await journal.is_private(self._conn, job_id)

    async def was_refunded(self, job_id: str) -> bool:
        """Whether the job's quota was given back: for a finished job, withheld at delivery
        (a delivery cut short after ``refund_withheld`` has no ``withheld_why`` to read)."""
        return await ledger.refunded(self._conn, job_id)

    def _audit(
        self,
        by: int | None = None,
        setting: str = WITHDRAWAL_AUDITED_AS,
        describe: Callable[[store.Withdrawal], str] = _withdrawal_audited,
    ) -> store.WithdrawalAudit | None:
        """A withdrawal (a post deleted, a moderator's command, or a result Easel withheld:
        ``setting``) is audited as ``by``'s, the moderator Easel knows did it (a Delete click,
        a command), else as Easel's doing, as a ban's cancels are (``bot.bans``): no member's
        name, since Discord does not say who deleted a message; with how many jobs, how many
        of them were unfinished (stopped and refunded now, or by the start gate after a crash),
        and which (None: neither known, before Easel is ready)."""
        actor = self.easel_id if by is None else by
        if actor is None:
            return None
        return store.WithdrawalAudit(actor, setting, describe)

    async def _stopped(self, withdrawn: list[str]) -> list[str]:
        """``withdrawn``, once ``_stop`` stopped those still queued or rendering."""
        await self._stop(withdrawn)
        return withdrawn

    async def _stop(self, withdrawn: list[str]) -> Sequence[str]:
        """Stop those of ``withdrawn`` still queued or rendering, and wake the deletes of the
        posts a moderator's withdrawal left; returns those stopped."""
        stopped: Sequence[str] = []
        if self.stop_withdrawn is not None:
            stopped = await self.stop_withdrawn(withdrawn)
        if withdrawn:
            self.posts_left_to_delete()
        return stopped

    async def older_standing_copies(
        self, job_id: str
    ) -> list[tuple[StoredJob, tuple[PostedMessage, ...]]]:
        """The older jobs of ``job_id``'s server with one of its pictures' pixels still
        standing (a moderator withdrew it: its copy's deletion never reaches an older one),
        oldest first, each with its posts, for the moderator to delete them too."""
        found = []
        for twin_id in await store.standing_twins(self._conn, [job_id]):
            if (twin := await self.job(twin_id)) is not None:
                found.append((twin, await store.posts_of(self._conn, twin_id)))
        return found

    async def copy_deleted(self, message_id: int) -> None:
        """Easel's copy by DM ``message_id`` is deleted by its member: not recorded, nor
        deleted again (``store.copy_deleted``)."""
        await store.copy_deleted(self._conn, message_id)

    async def copy_sent(self, job_id: str, post: PostedMessage) -> bool:
        """Easel sent a copy of a server's job's pictures as ``post`` in a member's direct
        messages: a moderator's withdrawal of the job deletes it. Whether the job still
        stands (False: withdrawn or erased meanwhile; the caller deletes the copy, left to the
        sweep should that fail: ``store.record_copy``)."""
        return await store.record_copy(self._conn, job_id, post)

    async def posted_again(self, job: StoredJob, channel_id: int | None, message_id: int) -> bool:
        """Easel posted ``job``'s pictures again (/show, U1-U4) in a channel of its server: a
        moderator deleting that post withdraws the job as deleting its result does. Whether
        the job is still there (False: its maker's /forget-me erased it meanwhile; the caller
        deletes the post, and /forget-me's sweep too, found gone once that worked, or again
        should it fail: ``_recorded``; or a moderator withdrew it just before the record:
        left to delete as that withdrawal's other posts are)."""
        if not await self._recorded(job.job_id, job.guild_id, channel_id, message_id):
            return False
        # Checked after the record: a withdrawal before it took the job's posts then, not this
        # one; one after it takes this one too.
        return channel_id is None or not await store.unlinked_if_withdrawn(
            self._conn, job.job_id, PostedMessage(channel_id, message_id)
        )

    async def result_posted(
        self, job_id: str, guild_id: int | None, channel_id: int | None, message_id: int
    ) -> bool:
        """The job's public progress message, or its result (the same message while the
        interaction's token lives), is ``message_id`` in the channel it was made in: deleting
        it withdraws the job, recorded as soon as it is posted (the queue records the
        delivery only after the copy by DM). Whether the job may still be shown: it is still
        there (its maker's /forget-me did not erase it meanwhile) and not withdrawn (its post
        deleted as it was posted, or the picture it was made from since the delivery gate)."""
        if not await self._recorded(job_id, guild_id, channel_id, message_id):
            return False
        record = await journal.get_job(self._conn, job_id)
        return record is not None and record.withdrawn_at is None

    async def _recorded(
        self, job_id: str, guild_id: int | None, channel_id: int | None, message_id: int
    ) -> bool:
        """Link the post to its job; one deleted before this, or in a channel deleted before
        this (its deletion matched no job then), withdraws the job now. A job erased
        meanwhile: False, its post left to delete (``pending_post_deletes``, written as the
        job is found gone) until ``post_delete_settled``, or tried again by the sweep."""
        if guild_id is None or channel_id is None:
            return True  # not a server's channel: nothing recorded, nothing to delete
        posted_in = guild_id, channel_id
        parent_id = self.thread_parent(channel_id)
        still_there = await journal.record_job_message(
            self._conn, job_id, message_id, posted_in=posted_in, parent_id=parent_id
        )
        if not still_there:
            return False
        if self._deleted.holds((*posted_in, message_id), self._clock()):
            for withdrawn in await self.withdraw_deleted(*posted_in, [message_id]):
                log.info("job %s withdrawn: its post was deleted as it was posted", withdrawn)
        for deleted_id in (channel_id, parent_id):
            if deleted_id is not None and self._deleted_channels.holds(
                (guild_id, deleted_id), self._clock()
            ):
                for withdrawn in await self.withdraw_deleted_channel(guild_id, deleted_id):
                    log.info(
                        "job %s withdrawn: its channel was deleted as it was posted", withdrawn
                    )
        return True

    async def restore(self, guild_id: int, job_id: str, admin_id: int) -> Restored:
        """An admin of ``guild_id`` undoes the withdrawal of its job ``job_id`` and of the jobs
        withdrawn with it, made from it or with its pixels (``store.restore_job``), audited
        like the server's settings. ``UserError`` for a job not of this server or not
        withdrawn, also when its maker's /forget-me erased it or another admin restored it
        after the read here."""
        if not await self._withdrawn_here(guild_id, job_id):
            raise UserError(f"Job `{job_id}` was not withdrawn; there is nothing to restore.")
        restored = await store.restore_job(
            self._conn,
            job_id,
            guild_id,
            admin_id=admin_id,
            now=self._clock(),
            describe=lambda jobs, private: f"{len(jobs)} restored: {listed_ids(jobs, private)}",
        )
        if not restored:  # erased, or restored (and maybe withdrawn again) since: read again
            if await self._withdrawn_here(guild_id, job_id):
                raise UserError(
                    f"Job `{job_id}` was restored meanwhile and withdrawn again since; restore "
                    "it again if you mean to."
                )
            raise UserError(f"Job `{job_id}` was restored already; there is nothing to restore.")
        has_pictures = bool(await journal.images_of(self._conn, job_id))
        return Restored(has_pictures, restored[1:])

    async def _withdrawn_here(self, guild_id: int, job_id: str) -> bool:
        """Whether ``job_id``, a job of ``guild_id``, is withdrawn; ``UserError`` when there is
        no such job there (another server's job is not named)."""
        record = await journal.get_job(self._conn, job_id)
        if record is None or record.guild_id != guild_id:
            raise UserError(
                f"There is no job `{job_id}` in this server; its id is in its result's caption "
                "and in its maker's /history."
            )
        return record.withdrawn_at is not None

    async def private_among(self, job_ids: Sequence[str]) -> frozenset[str]:
        """Which of ``job_ids`` are private: an answer counts them (``listed_ids``)."""
        return await store.private_among(self._conn, job_ids)

    async def is_post_of(
        self, job_id: str, guild_id: int, channel_id: int, message_id: int
    ) -> bool:
        """Whether ``message_id`` in that channel of that server is one of the job's posts
        (its result, /show and U1-U4 posts), the ones whose deletion withdraws it."""
        return await store.is_job_post(self._conn, job_id, (guild_id, channel_id), message_id)

    async def posts_of(self, job_id: str) -> tuple[PostedMessage, ...]:
        """The job's posts in its server still linked (its result, the progress message that
        became it or points to it, its /show and U1-U4 posts), whose deletion withdraws it:
        where a deletion Easel did not hear is looked for
        (``cogs.withdrawals.check_posts_there``)."""
        return await store.posts_of(self._conn, job_id)

    async def deleted_by_its_maker(self, job_id: str, message_id: int) -> bool:
        """The maker deletes one of the job's posts: its deletion (which Discord announces
        like a moderator's) withdraws nothing; the job's other posts still do. Whether it was
        one of the job's posts (to link again with ``posted_again`` if the delete fails)."""
        return await store.unlink_result_message(self._conn, job_id, message_id)

    async def unfinished(self, user_id: int, *, guild_id: int | None) -> list[HistoryLine]:
        """The member's queued and running jobs in the guild (None: direct messages), oldest
        first: jobs belong to the server they were made in."""
        records = await journal.unfinished_jobs_of(self._conn, user_id, guild_id)
        return [
            HistoryLine(
                record.id,
                record.status.value,
                str(json.loads(record.request_json).get("prompt", "")),
                record.created_at,
                0,
            )
            for record in records
        ]

    async def unposted_result(self, user_id: int, *, guild_id: int | None) -> str | None:
        """The member's newest job in the guild (None: direct messages) that is done, its
        result not posted yet: past a cancel, though ``unfinished`` no longer lists it."""
        return await journal.latest_unposted_result_of(self._conn, user_id, guild_id)

    async def forget(
        self,
        user_id: int,
        reply: ReplyToken | None = None,
        tell: TellErased | None = None,
        failed: TellFailed | None = None,
        *,
        direct_messages: int | None = None,
    ) -> Forgotten:
        """Erase the member's jobs, pictures and uploads (rows and files) and settings, and
        anonymise their quota ledger rows; their jobs' posts are returned for the caller to
        delete from Discord. ``tell`` tells the member (``reply``, while its token lives),
        then the request ends (``erasure_told``), before any other erase or answer of theirs
        (without it, the caller does both). The request is journaled first: a stop or a
        failure in the middle leaves it for ``resume`` to finish; ``failed`` tells the member
        of such a failure before the error is raised, also before any other erase or answer
        of theirs (a retry's "finished now" comes after it). Journaled, it is recorded outside
        the database too (``forget_me_log``), which a restore leaves (``forget_again``), before
        anything is erased: a database put back from a backup taken before the request, however
        far its run got (erased, told), erases it again.
        Refused, erasing nothing, while one of their jobs is queued or running: the queue
        still owns it, and a result written after the erase would name the member again.
        ``direct_messages``: the member's direct messages with Easel (None: not known), whose
        copies by DM are no longer recorded (``store.forget_copies_in``)."""
        async with self._erasing(user_id):
            asked = await erasures.ask(self._conn, user_id, self._clock(), reply)
            if asked.unfinished:
                jobs = asked.unfinished
                ids = ", ".join(f"`{job_id}`" for job_id in jobs)
                raise UserError(
                    f"Nothing was erased: your {counted(len(jobs), 'job')} {ids} "
                    f"{'is' if len(jobs) == 1 else 'are'} still queued or running. "
                    "Cancel them with /cancel or wait until they finish, then run /forget-me "
                    "again."
                )
            try:
                await self._record(user_id, asked.asked_at)
                if direct_messages is not None:
                    await store.forget_copies_in(self._conn, direct_messages)
                erased = await self._erase(user_id, asked.asked_at)
                return await self._told(user_id, erased, tell)
            except Exception as error:
                if failed is not None:
                    await failed(error)
                raise

    async def unfinished_erasures(self) -> list[Erasure]:
        """The /forget-me requests a stop or a failure left unfinished or untold, but for
        those being erased or answered now (``_erasing``)."""
        return [
            erasure
            for erasure in await erasures.unfinished(self._conn)
            if erasure.user_id not in self._erasing_now
        ]

    async def forget_reply_tokens(self, lifetime_s: float) -> int:
        """Blank the interaction tokens of the /forget-me requests asked more than
        ``lifetime_s`` ago (Discord no longer takes them: those members are told by direct
        message); how many."""
        return await erasures.clear_expired_tokens(self._conn, self._clock() - lifetime_s)

    async def resume(self, erasure: Erasure, tell: TellErased | None = None) -> Forgotten | None:
        """Finish ``erasure`` (from ``unfinished_erasures``): what the member made up to when
        they asked, not what they made since (a re-erase's settings, presets and refusals too:
        ``_saved_up_to``); ``tell`` as ``forget``'s. None (nobody told)
        when it was told done meanwhile, or asked again (that run answers for it)."""
        async with self._erasing(erasure.user_id):
            if await erasures.asked_at(self._conn, erasure.user_id) != erasure.asked_at:
                return None
            # Again: a stop or a failure may have come before the member's run recorded it.
            await self._record(erasure.user_id, erasure.asked_at)
            erased = await self._erase(
                erasure.user_id, erasure.asked_at, saved_up_to=_saved_up_to(erasure)
            )
            return await self._told(erasure.user_id, erased, tell)

    async def forget_again(self) -> int:
        """At start, before the queue renders or members are served: erase again what the
        database holds of the members whose /forget-me the record outside it names but the
        database does not know it carried out, made up to when they asked
        (``erasures.ask_again``): a database put back from a backup taken before they asked
        brought it back. Settings, presets and refusals go only where dated up to then. Nobody
        is told (each member was, or is by their own request's run); logged by count. One whose
        erase fails is left journaled, for the sweep of unfinished requests, which tells its
        member. A record that cannot be read is logged, and the start goes on: a live database
        knows each request it carried out. How many were erased again."""
        if self._forget_me_log is None:
            return 0
        try:
            asked = await asyncio.to_thread(self._forget_me_log.requests)
        except OSError as error:
            log.error(
                "/forget-me: %s cannot be read (%s), so a database put back from a backup may "
                "still hold what a /forget-me erased: make it a file Easel can read and write, "
                "then restart",
                self._forget_me_log.path,
                error.strerror or error,
            )
            return 0
        erased = 0
        for erasure in await erasures.ask_again(self._conn, asked):
            try:
                async with self._erasing(erasure.user_id):
                    await self._erase(
                        erasure.user_id, erasure.asked_at, saved_up_to=_saved_up_to(erasure)
                    )
                    await self.erasure_told(erasure.user_id, erasure.asked_at)
            except Exception:
                # Naming no one: this line outlives the erase.
                log.exception("/forget-me: erasing again what a database put back held failed")
            else:
                erased += 1
        if erased:
            log.warning(
                "/forget-me: this database held what %d request(s) recorded in %s had erased "
                "(put back from a backup taken before them?): erased again",
                erased,
                self._forget_me_log.path,
            )
        return erased

    async def _record(self, user_id: int, asked_at: float) -> None:
        """The request journaled, on disk outside the database (``forget_me_log``) before
        anything of it is erased. A record that fails (a read-only or full disk) fails no
        erase: only a restore of a backup from before it could undo this one, and the error
        says so. Once per request in this process (``_recorded_requests``)."""
        if self._forget_me_log is None or (user_id, asked_at) in self._recorded_requests:
            return
        try:
            await asyncio.to_thread(self._forget_me_log.record, user_id, asked_at)
            self._recorded_requests.add((user_id, asked_at))
        except OSError as error:
            # Naming no one: this line outlives the erase.
            log.error(
                "/forget-me: a request could not be added to %s (%s): it is erased, but a "
                "database put back from a backup taken before it would bring its data back; "
                "make the file writable",
                self._forget_me_log.path,
                error.strerror or error,
            )

    async def _told(self, user_id: int, forgotten: Forgotten, tell: TellErased | None) -> Forgotten:
        """Inside ``_erasing``: the member told, then the request ended. A stop or failure
        between the two tells them again, as the request is left."""
        if tell is not None:
            await tell(forgotten)
            await self.erasure_told(user_id, forgotten.asked_at)
        return forgotten

    async def erasure_told(self, user_id: int, asked_at: float) -> None:
        """The member was told (or could not be: the log says so) that their request of
        ``asked_at`` is done: its journal row goes."""
        await erasures.told(self._conn, user_id, asked_at)

    @asynccontextmanager
    async def _erasing(self, user_id: int) -> AsyncIterator[None]:
        """One erase of a member at a time, with its answer (theirs, and the one a start or
        a retry resumes)."""
        while (running := self._erasing_now.get(user_id)) is not None:
            await running.wait()
        done = self._erasing_now[user_id] = asyncio.Event()
        try:
            yield
        finally:
            del self._erasing_now[user_id]
            done.set()

    async def _erase(
        self, user_id: int, asked_at: float, *, saved_up_to: float | None = None
    ) -> Forgotten:
        counted_since, period_end = quota_window(self._clock())
        broker_copies_left = False

        async def remove_files(batch: store.ErasedJobs) -> None:
            nonlocal broker_copies_left
            # Before the next batch: a stop in between leaves no file of an erased job, and no
            # broker copy unasked for (a rerun erases, and names, only the jobs left; the
            # journal, ``erasures.batch_left``, names this batch's).
            # An upload that a job journaled since the batch's rows went reads (another
            # member's 🔄 of a post not deleted yet) stays with it, for retention.
            read = await journal.paths_read(self._conn, batch.input_paths)
            uploads = [path for path in batch.input_paths if path not in read]
            await asyncio.to_thread(remove_inside, self._images_dir, batch.image_paths)
            # And each job's result folder by its id, as retention does: whatever its rows
            # said (one written before schema 33 names the data folder where it was then).
            folders = await asyncio.to_thread(
                pictures_by_folder, self._images_dir, (), batch.job_ids
            )
            await asyncio.to_thread(remove_result_folders, folders, frozenset())
            await asyncio.to_thread(remove_inside, self._inputs_dir, uploads)
            # Pictures of other jobs that only the erased ones read (a variation of a pruned
            # result): their folders were kept for them; retention would not name them again.
            await remove_unread_results(self._conn, self._images_dir, uploads)
            # A picture a row names outside images/ is not Easel's to delete: not counted
            # erased, and left to the operator.
            left = await asyncio.to_thread(files_left, self._images_dir.parent, batch.image_paths)
            if left:
                log.warning(
                    "/forget-me: %s outside %s kept, not erased: %s",
                    counted(len(left), "stored picture"),
                    self._images_dir,
                    ", ".join(left),
                )
            if not broker_copies_left:  # once it failed, the rest expire on their own too
                broker_copies_left = not await self._drop_broker_copies(batch.job_ids)
            await erasures.batch_finished(
                self._conn,
                user_id,
                erasures.ErasedBatch(list(batch.job_ids), batch.image_paths, batch.input_paths),
                broker_left=broker_copies_left,
                uploads_kept=len(batch.input_paths) - len(uploads),
                pictures_kept=len(left),
            )

        # The batch a stop interrupted between its rows' delete and its files' (nothing else
        # names its files or jobs now), first: its files, and its jobs' broker copies.
        left = await erasures.batch_left(self._conn, user_id)
        if left.job_ids or left.image_paths or left.input_paths:
            await remove_files(
                store.ErasedJobs(tuple(left.job_ids), left.image_paths, left.input_paths, ())
            )
        erased = await accounting.erase_member(
            self._conn,
            user_id,
            asked_at=asked_at,
            counted_since=counted_since,
            anonymise_at=period_end,
            erased_batch=remove_files,
            saved_up_to=saved_up_to,
        )
        # The erase's last step deleted the settings (a stop before it left them).
        self._member_settings.forget(user_id)
        # The erased rows stay in the database file's older pages until the write-ahead log is
        # copied back, and in the log until it is emptied: both now, or (a reader holds the
        # log) at Retention's next sweep.
        await write_back_log(self._conn)
        counts = await erasures.counts(self._conn, user_id)
        # ``erasures.ask`` wrote it, and only ``erasure_told`` (after this) deletes it.
        assert counts is not None, "a /forget-me request erased without its journal row"
        return Forgotten(
            jobs=counts.jobs,
            pictures=counts.pictures,
            uploads=counts.uploads,
            ledger_rows_anonymised=counts.ledger_rows_anonymised,
            ledger_rows_deferred=counts.ledger_rows_deferred,
            deferred_until=period_end,
            broker_copies_left=counts.broker_copies_left,
            posts=erased.posts,
            all_posts=counts.posts,
            asked_at=asked_at,
        )

    async def pending_post_deletes(self) -> tuple[PostedMessage, ...]:
        """The posts of erased jobs not yet deleted from Discord (``Forgotten.posts`` that a
        stop interrupted, or Discord refused or failed), and those a moderator's withdrawal
        left (its jobs' other posts and copies by DM), whose next try is due."""
        return await store.pending_post_deletes(self._conn, self._clock())

    async def post_delete_settled(self, post: PostedMessage) -> None:
        """``post`` is deleted from Discord, or found gone already."""
        await store.post_delete_settled(self._conn, post.message_id)

    async def post_delete_failed(self, post: PostedMessage) -> bool:
        """Discord refused or failed ``post``'s delete: whether it is tried again (after
        ``post_delete_retry_wait_s``), else it was the last try and it is given up, or none
        was pending (a direct message's; one settled meanwhile): logged, with where it
        stays."""
        now = self._clock()

        def retry_at(failures: int) -> float | None:
            if failures >= POST_DELETE_TRIES:
                return None
            return now + post_delete_retry_wait_s(failures)

        outcome = await store.post_delete_failed(self._conn, post.message_id, retry_at)
        if isinstance(outcome, float):
            return True
        if outcome == "given up":
            log.warning(
                "/forget-me: message %d stays in channel %d: its delete failed %d times, given up",
                post.message_id,
                post.channel_id,
                POST_DELETE_TRIES,
            )
        else:
            log.warning(
                "message %d in channel %d: its delete failed, and none is pending to try again",
                post.message_id,
                post.channel_id,
            )
        return False

    async def _drop_broker_copies(self, job_ids: tuple[str, ...]) -> bool:
        """Delete the broker's copies of the erased jobs; whether none is left. A broker
        that cannot be reached does not fail /forget-me: its copies expire on their own."""
        if self._copies is None or not job_ids:
            return True
        try:
            async with asyncio.timeout(BROKER_ERASE_S):
                await self._copies.drop_copies(job_ids)
        except Exception as error:
            # Neither the member nor their jobs named: this line outlives the erase.
            log.warning(
                "/forget-me: the broker's copies of %d job(s) stay until they expire (%s)",
                len(job_ids),
                type(error).__name__,
            )
            return False
        return True

"""Which of Easel's posts may have been deleted without Easel hearing it, and so are asked of
Discord before their job's pictures are used again (``cogs.withdrawals.check_posts_there``).

Discord announces each deletion (MESSAGE_DELETE) to the gateway session connected when it is
made, and a RESUMED replays what a dropped connection missed; it replays nothing to a new
session (a READY after a resume failed) nor to an Easel that was offline, and none at all
of a server or channel Easel was not in or could not view (a MESSAGE_DELETE goes only where
it has View Channel). So a post made during the current session, or one Discord said was
there during it, cannot have been deleted unheard while that session lasts: only the others
are asked, each once a session. Easel being added to a server again, or getting View Channel
it lacked or lost, begins such a "session" too (``began_hearing_more``); a server back from an
outage, or a thread Easel was out of and is in again, begins one there alone
(``began_hearing_in``): its posts elsewhere are not asked again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.memo import ExpiringKeys
from bot.snowflakes import CLOCK_SLACK_S, made_at

# The posts Discord said were there this session, kept at most this many (the oldest go first:
# one dropped is asked about once more) and this long: months of one session stay bounded.
SEEN_KEPT = 10_000
SEEN_KEPT_S = 24 * 3600.0
# Servers and threads that began a session of their own since the latest READY, kept at most
# this many: past it, one more begins a session everywhere instead (each post asked once more).
PLACES_KEPT = 10_000


@dataclass(frozen=True)
class Beginning:
    """A session's beginning, everywhere or in one server or thread."""

    number: int
    at: float  # Easel's clock


class UnheardDeletions:
    """The gateway's sessions as the post checks need them, told by ``cogs.withdrawals``
    (every READY, RESUMED and dropped connection, and what widens what Easel hears). For one
    unsharded connection: a shard's RESUMED would say nothing of the others."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Beginnings so far, everywhere (READYs, ``began_hearing_more``) or in one server or
        # thread (``began_hearing_in``): each has its number, the count then.
        self._session = 0
        self._began: Beginning | None = None  # the latest one everywhere; None: no READY yet
        self._began_in: dict[int, Beginning] = {}  # server or thread id: its latest one since
        self._connected = False
        # (post, the number of the latest beginning where it is) when Discord said it is there
        self._seen_there = ExpiringKeys[tuple[int, int]](SEEN_KEPT_S, SEEN_KEPT)

    @property
    def session(self) -> int:
        """The latest beginning's number: ``seen_there`` counts an answer only if no beginning
        where its post is came after it was asked."""
        return self._session

    def session_began(self) -> None:
        """A READY: nothing of the time before it is replayed."""
        self._connected = True
        self.began_hearing_more()

    def began_hearing_more(self) -> None:
        """Easel began to hear deletions where it heard none before (a READY; a server that
        added it again; View Channel it lacked or lost, then got): none made before was
        announced, so every post made before now is asked about once, as after a READY (in
        every server: this is rare)."""
        self._session += 1
        self._began = Beginning(self._session, self._clock())
        self._began_in = {}
        self._seen_there = ExpiringKeys[tuple[int, int]](SEEN_KEPT_S, SEEN_KEPT)

    def began_hearing_in(self, place_id: int) -> None:
        """Easel began to hear deletions in one server (back from an outage: GUILD_DELETE
        unavailable, then GUILD_CREATE) or thread (a private one it was removed from, then
        added to again) where it heard none meanwhile: every post there made before now is
        asked about once; posts elsewhere are not asked again."""
        if len(self._began_in) >= PLACES_KEPT and place_id not in self._began_in:
            self.began_hearing_more()
            return
        self._session += 1
        self._began_in[place_id] = Beginning(self._session, self._clock())

    def resumed(self) -> None:
        """A RESUMED: what the dropped connection missed was replayed first."""
        self._connected = True

    def disconnected(self) -> None:
        """Until a RESUMED or a READY, a deletion may go unheard: every post is asked about."""
        self._connected = False

    def may_be_gone_unheard(self, message_id: int, guild_id: int, channel_id: int) -> bool:
        """Whether a deletion of Easel's post ``message_id`` (in that server's channel or
        thread) may have gone unheard: it was made before the latest session there began
        (``CLOCK_SLACK_S`` after it included) and Discord has not said it is there since;
        always while disconnected, and before the first READY."""
        began = self._latest_beginning(guild_id, channel_id)
        if began is None or not self._connected:
            return True
        if made_at(message_id) > began.at + CLOCK_SLACK_S:
            return False
        return not self._seen_there.holds((message_id, began.number), self._clock())

    def seen_there(self, message_id: int, guild_id: int, channel_id: int, session: int) -> None:
        """Discord answered that the post is there, asked in ``session``: any deletion after
        that answer is heard while the session there lasts (none once a later one began)."""
        began = self._latest_beginning(guild_id, channel_id)
        if began is not None and began.number <= session:
            self._seen_there.add((message_id, began.number), self._clock())

    def _latest_beginning(self, guild_id: int, channel_id: int) -> Beginning | None:
        """The latest beginning where the post is: everywhere, in its server or its thread."""
        began = self._began
        for place in (guild_id, channel_id):
            there = self._began_in.get(place)
            if began is not None and there is not None and there.number > began.number:
                began = there
        return began

"""Which of Easel's posts may have been deleted without Easel hearing it, and so are asked of
Discord before their job's pictures are used again (``cogs.withdrawals.check_posts_there``).

Discord announces each deletion (MESSAGE_DELETE) to the gateway session connected when it is
made, and a RESUMED replays what a dropped connection missed; it replays nothing to a new
session (a READY after a resume failed) nor to an Easel that was offline, and none at all
of a server or channel Easel was not in or could not view (a MESSAGE_DELETE goes only where
it has View Channel). So a post made during the current session, or one Discord said was
there during it, cannot have been deleted unheard while that session lasts: only the others
are asked, each once a session. Easel being added to a server again, or getting View Channel
it lacked or lost, begins such a "session" too (``began_hearing_more``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.memo import ExpiringKeys
from bot.snowflakes import CLOCK_SLACK_S, made_at

# The posts Discord said were there this session, kept at most this many (the oldest go first:
# one dropped is asked about once more) and this long: months of one session stay bounded.
SEEN_KEPT = 10_000
SEEN_KEPT_S = 24 * 3600.0


class UnheardDeletions:
    """The gateway's sessions as the post checks need them, told by ``cogs.withdrawals``
    (every READY, RESUMED and dropped connection, and what widens what Easel hears). For one
    unsharded connection: a shard's RESUMED would say nothing of the others."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._session = 0  # READYs (and other beginnings: ``began_hearing_more``) so far
        self._began_at: float | None = None  # the latest beginning's time; None: no READY yet
        self._connected = False
        self._seen_there = ExpiringKeys[int](SEEN_KEPT_S, SEEN_KEPT)

    @property
    def session(self) -> int:
        """The current session's number: ``seen_there`` counts an answer only in the session
        it was asked in."""
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
        self._began_at = self._clock()
        self._seen_there = ExpiringKeys[int](SEEN_KEPT_S, SEEN_KEPT)

    def resumed(self) -> None:
        """A RESUMED: what the dropped connection missed was replayed first."""
        self._connected = True

    def disconnected(self) -> None:
        """Until a RESUMED or a READY, a deletion may go unheard: every post is asked about."""
        self._connected = False

    def may_be_gone_unheard(self, message_id: int) -> bool:
        """Whether a deletion of Easel's post ``message_id`` may have gone unheard: it was made
        before this session (``CLOCK_SLACK_S`` after it began included) and Discord has not
        said it is there since; always while disconnected, and before the first READY."""
        if self._began_at is None or not self._connected:
            return True
        if made_at(message_id) > self._began_at + CLOCK_SLACK_S:
            return False
        return not self._seen_there.holds(message_id, self._clock())

    def seen_there(self, message_id: int, session: int) -> None:
        """Discord answered that the post is there, asked in ``session``: any deletion after
        that answer is heard while the session lasts (none once a later one began)."""
        if session == self._session:
            self._seen_there.add(message_id, self._clock())

"""The dashboard gallery's thumbnails (``bot.web.dashboard``): made on threads of their own,
kept a while, and shared fairly between servers (no discord, no torch).

Decoding a stored PNG takes a core for a while, so decodes run on ``THUMBNAIL_THREADS``
threads, not asyncio's default pool that the rest of the bot shares. The decodes waiting for
those threads queue per server, and the threads take the servers' queues in turn (round
robin): a server with one picture to make waits behind one decode of each other server, not
behind a whole gallery of theirs. Decodes waiting or under way are capped per server and in
all; when the whole queue is full, the server holding the most gives up its newest waiting
decode to a server holding fewer, so admins of a few servers together cannot keep every other
server on 503. A refused or given-up decode is ``DecodersBusy`` (503 with Retry-After: the
page asks again at its next poll).
"""

from __future__ import annotations

import asyncio
import functools
import io
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

THUMBNAIL_PX = 256
GALLERY_SIZE = 24
# Thumbnails kept in memory (a few tens of KB each): several gallery pages' worth. When full,
# the oldest of the server that holds the most goes: a server churning through its pictures
# evicts its own, not another's that holds fewer.
THUMBNAILS_KEPT = 4 * GALLERY_SIZE
THUMBNAIL_THREADS = 2
# Decodes waiting or under way, at most, for one server (one gallery's first load) and in all.
THUMBNAILS_PENDING_PER_SERVER = GALLERY_SIZE
THUMBNAILS_PENDING = 4 * GALLERY_SIZE

_Key = tuple[str, int]  # a picture: its job and index


class DecodersBusy(Exception):
    """The server's share of pending thumbnails is taken, or its decode gave way to a server
    holding fewer."""


@dataclass(frozen=True)
class _Decode:
    guild_id: int
    key: _Key
    path: Path
    done: asyncio.Future[bytes]  # what every request for this picture waits on


class Thumbnails:
    """Makes and keeps thumbnails; ``close()`` stops its threads (the web server's stop)."""

    def __init__(self) -> None:
        # Per server, oldest first.
        self._kept: dict[int, OrderedDict[_Key, bytes]] = {}
        # The decodes waiting or under way: a second request for a picture waits for the same.
        self._making: dict[_Key, _Decode] = {}
        self._pending: Counter[int] = Counter()  # how many of those, per server
        # The waiting decodes, per server, servers in the order of their next turn.
        self._waiting: OrderedDict[int, deque[_Decode]] = OrderedDict()
        self._running = 0
        self._closed = False
        self._threads = ThreadPoolExecutor(THUMBNAIL_THREADS, thread_name_prefix="thumbnails")

    async def get(self, guild_id: int, job_id: str, idx: int, path: Path) -> bytes:
        """The thumbnail of one of ``guild_id``'s pictures, made once while it is kept; the
        caller has checked the admin may see it. ``DecodersBusy`` when it cannot be made now."""
        key = (job_id, idx)
        kept = self._kept.get(guild_id)
        if kept is not None and (thumbnail := kept.get(key)) is not None:
            kept.move_to_end(key)
            return thumbnail
        decode = self._making.get(key)
        if decode is None:
            self._make_room(guild_id)
            decode = _Decode(guild_id, key, path, asyncio.get_running_loop().create_future())
            self._making[key] = decode
            self._pending[guild_id] += 1
            self._waiting.setdefault(guild_id, deque()).append(decode)
            self._start_decodes()
        # Shielded: a request that goes away does not stop the decode the others wait for.
        return await asyncio.shield(decode.done)

    async def close(self) -> None:
        """Refuse the waiting decodes and wait for the threads to end those under way."""
        self._closed = True
        for queue in self._waiting.values():
            for decode in queue:
                self._give_up(decode)
        self._waiting.clear()
        await asyncio.to_thread(self._threads.shutdown)

    def _make_room(self, guild_id: int) -> None:
        """Room for one more decode of ``guild_id``'s, or ``DecodersBusy``: within its share,
        and within the total, if need be by taking the newest waiting decode of the server
        holding the most (when it holds at least two more, so the two never trade places)."""
        mine = self._pending[guild_id]
        if self._closed or mine >= THUMBNAILS_PENDING_PER_SERVER:
            raise DecodersBusy
        if self._pending.total() < THUMBNAILS_PENDING:
            return
        fullest = max(self._waiting, key=self._pending.__getitem__, default=None)
        if fullest is None or self._pending[fullest] < mine + 2:
            raise DecodersBusy
        queue = self._waiting[fullest]
        self._give_up(queue.pop())
        if not queue:
            del self._waiting[fullest]

    def _give_up(self, decode: _Decode) -> None:
        self._forget(decode)
        decode.done.set_exception(DecodersBusy())

    def _forget(self, decode: _Decode) -> None:
        del self._making[decode.key]
        self._pending[decode.guild_id] -= 1
        if not self._pending[decode.guild_id]:
            del self._pending[decode.guild_id]

    def _start_decodes(self) -> None:
        """Hand waiting decodes to the free threads, one per server in turn."""
        while not self._closed and self._running < THUMBNAIL_THREADS and self._waiting:
            guild_id, queue = self._waiting.popitem(last=False)
            decode = queue.popleft()
            if queue:  # the server's next decode comes after every other server's
                self._waiting[guild_id] = queue
            self._running += 1
            running = asyncio.get_running_loop().run_in_executor(
                self._threads, make_thumbnail, decode.path
            )
            running.add_done_callback(functools.partial(self._made, decode))

    def _made(self, decode: _Decode, running: asyncio.Future[bytes]) -> None:
        """Keeps a decoded thumbnail (a failed decode is the waiting requests' to answer), and
        starts the next decode."""
        self._running -= 1
        self._forget(decode)
        if running.cancelled():
            decode.done.cancel()
        elif (error := running.exception()) is not None:
            decode.done.set_exception(error)
        else:
            self._keep(decode.guild_id, decode.key, running.result())
            decode.done.set_result(running.result())
        self._start_decodes()

    def _keep(self, guild_id: int, key: _Key, thumbnail: bytes) -> None:
        self._kept.setdefault(guild_id, OrderedDict())[key] = thumbnail
        if sum(len(kept) for kept in self._kept.values()) > THUMBNAILS_KEPT:
            fullest = max(self._kept, key=lambda guild: len(self._kept[guild]))
            self._kept[fullest].popitem(last=False)
            if not self._kept[fullest]:
                del self._kept[fullest]


def make_thumbnail(path: Path) -> bytes:
    with Image.open(path) as picture:
        small = picture.convert("RGB")
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()

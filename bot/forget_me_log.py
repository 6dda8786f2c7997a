"""/forget-me's record outside the database: ``EASEL_DATA_DIR/forget-me.log``, one line per
request, the member's id and when they asked (``asked_at``), nothing else. A request is appended,
and on disk, once journaled and before anything of it is erased, so a restore once it is
recorded cannot lose it. It is lost only when the run ends between the database's commit of the
request and this file's fsync (milliseconds: a thread hop and the fsync) and a backup from
before the request is then put back; nothing of it was erased then, nor its member told. No
line is ever rewritten. A database put back from a backup taken before a request holds what
that request erased, and does not know it carried it out (``erasures_done``): the next start
erases it again (``bot.history.History.forget_again``). So no backup may be put back over this
file.

A line a crash cut short (no newline at its end) is no request: it is skipped when read and cut
off before the next append, so that it never joins the next line."""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import BinaryIO

from bot.on_disk import put_on_disk

log = logging.getLogger(__name__)

FILE_NAME = "forget-me.log"
# The file's end is read back this much at a time to find its last whole line.
_TAIL_BYTES = 4096
# A warning names this many of the lines skipped (by number: a line names a member).
_LINES_NAMED = 20


class ForgetMeLog:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME
        # Appends run on worker threads: one at a time, each after the last whole line. Per
        # instance: only one exists (``bot.services``), in one process (the single-instance
        # lock); a second on the same file could cut off a line the first is writing.
        self._appending = threading.Lock()

    def record(self, user_id: int, asked_at: float) -> None:
        """Append the member's request; on disk before this returns. ``repr`` of the time, so
        that it reads back equal to the one journaled in the database."""
        line = f"{user_id} {asked_at!r}\n".encode("ascii")
        with self._appending:
            created = not self.path.exists()
            with self.path.open("ab+") as file:
                file.truncate(_end_of_last_line(file))  # a line a crash cut short
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            if created:  # the new file's name on disk too
                put_on_disk(self.path.parent)

    def requests(self) -> dict[int, float]:
        """Each member's latest request: when they asked. A line a crash cut short, or one
        not of this file's form, is skipped (logged, by count: it names no one)."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        *lines, torn = text.split(b"\n")
        asked: dict[int, float] = {}
        unread: list[int] = []
        for number, line in enumerate(lines, start=1):
            request = _request(line)
            if request is None:
                unread.append(number)
                continue
            user_id, at = request
            asked[user_id] = max(at, asked.get(user_id, at))
        if torn:
            log.warning(
                "%s: its last line was cut short (a crash while writing it): skipped", self.path
            )
        if unread:
            shown = ", ".join(map(str, unread[:_LINES_NAMED]))
            more = f" and {len(unread) - _LINES_NAMED} more" if len(unread) > _LINES_NAMED else ""
            log.warning(
                "%s: line(s) %s%s not of the form '<member id 1..2^63-1> <time>': skipped",
                self.path,
                shown,
                more,
            )
        return asked


def _request(line: bytes) -> tuple[int, float] | None:
    """A line's member id and time asked; None when it is not of that form. A member id is a
    Discord id: from 1 to 2**63 - 1 (0 names no one: the erased ledger rows' owner)."""
    fields = line.split(b" ")
    # 19 digits at most: 2**63 - 1 has 19 (and a longer run is not made a number).
    if len(fields) != 2 or not fields[0].isdigit() or len(fields[0]) > 19:
        return None
    user_id = int(fields[0])
    if not 0 < user_id < 2**63:
        return None
    try:
        at = float(fields[1])
    except ValueError:
        return None
    return (user_id, at) if math.isfinite(at) and at > 0 else None


def _end_of_last_line(file: BinaryIO) -> int:
    """Where the file's last whole line ends (0: it has none)."""
    end = file.seek(0, os.SEEK_END)
    while end > 0:
        start = max(end - _TAIL_BYTES, 0)
        file.seek(start)
        newline = file.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0

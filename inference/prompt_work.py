"""What a request's prompts add to each model call, as its prompt plans found them: the rows a
picture takes in the UNet (one a part of its prompt's ``AND``, one its negative's) and the key
length every row has there (77-token chunks: ``BREAK`` and long prompts). Admission records it
(``bot.policy.prompt_safety.plan_request``); the queue batches by it and shares a batch's
time by it, and the estimate reckons by it (``bot.jobs.accounting``). Pure Python."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Filled at each admission from the plans, whatever the request held (a member cannot forge
# it); absent: a plain prompt's work, or a job journaled before admission recorded it.
PROMPT_WORK_OPTION = "prompt_work"
# What each 77-token chunk past the first adds to a row's work (its cross-attention keys):
# at SD 1.5 512x512, 150 chunks make a row about 2 to 2.5 times a plain one's. Rough, as the
# estimate's step time is.
CHUNK_ROW_SHARE = 0.01
# Requests batch within one band of parts and one of chunks (each band's highest count):
# every row of a call is padded to its longest prompt, and every picture of it waits for the
# call's rows, so a plain prompt never shares a call with one of many times its work. Typical
# prompts (one part, up to 4 chunks with their negative) share one band.
_PARTS_BANDS = (1, 2, 4, 8)
_CHUNKS_BANDS = (4, 16, 64)


@dataclass(frozen=True)
class PromptWork:
    """The most ``parts`` (``AND``) of any of a request's prompts, and the most ``chunks``
    of any of its texts (negative included): an upper bound of each picture's work."""

    parts: int = 1
    chunks: int = 1

    @classmethod
    def of(cls, options: Mapping[str, object]) -> PromptWork:
        """As admission recorded it in a request's ``options`` (a plain prompt's if not)."""
        recorded = options.get(PROMPT_WORK_OPTION)
        if not isinstance(recorded, Mapping):
            return cls()
        return cls(_count(recorded.get("parts")), _count(recorded.get("chunks")))

    @classmethod
    def most(cls, works: Iterable[PromptWork]) -> PromptWork:
        """The bound of several plans' work (a request's pictures and passes)."""
        found = list(works)
        return cls(
            max((work.parts for work in found), default=1),
            max((work.chunks for work in found), default=1),
        )

    def option(self) -> dict[str, dict[str, int]]:
        """The options that record it: none for a plain prompt's."""
        if self == PromptWork():
            return {}
        return {PROMPT_WORK_OPTION: {"parts": self.parts, "chunks": self.chunks}}

    def per_picture(self) -> float:
        """A picture's work in each model call, a plain prompt's (two rows of one chunk)
        being 1."""
        return (self.parts + 1) / 2 * (1 + CHUNK_ROW_SHARE * (self.chunks - 1))

    def band(self) -> tuple[int, int]:
        """Where it batches (``RenderRequest.batch_key``)."""
        return bisect_left(_PARTS_BANDS, self.parts), bisect_left(_CHUNKS_BANDS, self.chunks)


def _count(value: object) -> int:
    """A recorded count, 1 where it is not a positive whole number (a journal edited by hand)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

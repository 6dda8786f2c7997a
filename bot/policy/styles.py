"""Prompt styles from a web UI ``styles.csv`` (columns ``name``, ``prompt``,
``negative_prompt``), read again once edited, so an edit applies without a restart (pure)."""

from __future__ import annotations

import csv
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from bot.requests import RequestError

log = logging.getLogger(__name__)

PROMPT_PLACEHOLDER = "{prompt}"
# A styles.csv's first row names its columns; ``negative_prompt`` may be left out.
REQUIRED_COLUMNS = ("name", "prompt")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


def load_styles(path: Path) -> dict[str, Style]:
    """The styles in ``path`` by name; none when the file does not exist. Parsed again only
    when the file changes (its device, inode, size, modification or change time: a copy that
    keeps the old modification time, ``cp -p``, still changes the last), or while it changed
    too recently for its time to tell (``SETTLED_NS``): the autocomplete asks at every
    keystroke, on the event loop, and 3,000 styles took 23 ms to parse."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    if not S_ISREG(stat.st_mode):
        return {}
    version = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if time.time_ns() - stat.st_mtime_ns < SETTLED_NS:
        return _parsed.__wrapped__(*version)
    return dict(_parsed(*version))


# A file written again within the same tick of a coarse file-system clock (2 s on FAT), at the
# same size, keeps its modification time: one changed more recently than this is read anew.
SETTLED_NS = 3_000_000_000


@functools.lru_cache(maxsize=4)
def _parsed(
    path: Path, device: int, inode: int, size: int, mtime_ns: int, ctime_ns: int
) -> dict[str, Style]:
    """The styles of this version of ``path``, kept by version (``load_styles`` hands out
    copies)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        # Read all the same (without a name column: no style), but logged, as the refusal of
        # an unknown style would then only say that this bot has no styles.
        log.error(
            "%s: the first row must name the columns name,prompt,negative_prompt; missing %s",
            path,
            ", ".join(missing),
        )
    styles: dict[str, Style] = {}
    for row in rows:
        name = (row.get("name") or "").strip()
        if name:
            styles[name] = Style(
                name, (row.get("prompt") or "").strip(), (row.get("negative_prompt") or "").strip()
            )
    return styles


def _merge(text: str, style_text: str) -> str:
    # As in the web UI: "{prompt}" marks where the member's text goes; otherwise it is appended.
    if PROMPT_PLACEHOLDER in style_text:
        return style_text.replace(PROMPT_PLACEHOLDER, text)
    return ", ".join(part for part in (text, style_text) if part)


def apply_style(
    styles: dict[str, Style], name: str, prompt: str, negative: str | None
) -> tuple[str, str]:
    """``prompt`` and ``negative`` with the style named ``name`` applied."""
    style = style_named(styles, name)
    return _merge(prompt, style.prompt), _merge(negative or "", style.negative_prompt)


def style_named(styles: dict[str, Style], name: str) -> Style:
    """The style named ``name``; ``RequestError`` naming some there are when there is none."""
    style = styles.get(name)
    if style is None:
        if not styles:
            raise RequestError(f"style {name!r} does not exist: this bot has no styles")
        listed = sorted(styles)
        more = f" and {len(listed) - 10} more" if len(listed) > 10 else ""
        known = ", ".join(listed[:10]) + more
        raise RequestError(f"style {name!r} does not exist; known styles: {known}")
    return style

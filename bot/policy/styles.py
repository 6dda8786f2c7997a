"""Prompt styles from a web UI ``styles.csv`` (columns ``name``, ``prompt``,
``negative_prompt``), read on each use so an edited file applies without a restart (pure)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bot.requests import RequestError

PROMPT_PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


def load_styles(path: Path) -> dict[str, Style]:
    """The styles in ``path`` by name; none when the file does not exist."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as file:
        rows = list(csv.DictReader(file))
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
    style = styles.get(name)
    if style is None:
        known = ", ".join(sorted(styles)[:10]) or "none are defined (styles.csv is missing)"
        raise RequestError(f"style {name!r} does not exist; known styles: {known}")
    return _merge(prompt, style.prompt), _merge(negative or "", style.negative_prompt)

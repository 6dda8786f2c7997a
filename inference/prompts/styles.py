"""Web UI ``styles.csv``: named prompt fragments (``name,prompt,negative_prompt``).

A style text containing ``{prompt}`` has the user's text put in its place; otherwise the
style is appended after ``", "`` (both ends trimmed, empty parts skipped), as in the web UI.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from inference.prompts.errors import PromptError


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


def load_styles(path: Path | str) -> dict[str, Style]:
    """Read a web UI ``styles.csv``; the header row names the columns."""
    styles: dict[str, Style] = {}
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "prompt"} - set(reader.fieldnames or ())
        if missing:
            raise PromptError(
                f"{path}: styles file needs the columns name,prompt,negative_prompt; "
                f"missing {', '.join(sorted(missing))}"
            )
        for row in reader:
            name = (row.get("name") or "").strip()
            if name:
                styles[name] = Style(
                    name, row.get("prompt") or "", row.get("negative_prompt") or ""
                )
    return styles


def merge_style_text(style_text: str, text: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", text)
    return ", ".join(part for part in (text.strip(), style_text.strip()) if part)


def pick_styles(names: Iterable[str], styles: Mapping[str, Style]) -> list[Style]:
    """The named styles in order; an unknown name is an error listing the known ones."""
    picked = []
    for name in names:
        style = styles.get(name)
        if style is None:
            close = difflib.get_close_matches(name, list(styles), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            known = ", ".join(sorted(styles)) or "none are loaded"
            raise PromptError(f"unknown style {name!r}{hint}; known styles: {known}")
        picked.append(style)
    return picked


def apply_styles(prompt: str, negative: str, styles: Iterable[Style]) -> tuple[str, str]:
    """Apply ``styles`` in order to the prompt and the negative prompt."""
    for style in styles:
        prompt = merge_style_text(style.prompt, prompt)
        negative = merge_style_text(style.negative_prompt, negative)
    return prompt, negative

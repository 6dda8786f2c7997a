"""The names Easel gives the files of a job's pictures: ``easel-<job>``. No member chooses
them, so a message Easel wrote that carries one is a post of that job's pictures."""

from __future__ import annotations

import discord


def carries_pictures_of(message: discord.Message, job_id: str, *, result_only: bool) -> bool:
    """Whether one of ``message``'s files is named for ``job_id``'s pictures: its result's
    (``easel-<job>.<ext>``; a /show's grid is named so too), or, unless ``result_only``, also
    a /show's, U1-U4's or a copy's single picture (``easel-<job>-<index>.png``). Spoilered
    files keep the name behind Discord's ``SPOILER_`` prefix."""
    names = (f"easel-{job_id}.",) if result_only else (f"easel-{job_id}.", f"easel-{job_id}-")
    return any(
        file.filename.removeprefix("SPOILER_").startswith(names) for file in message.attachments
    )

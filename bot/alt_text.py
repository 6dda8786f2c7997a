"""What a screen reader says of a picture Easel posts (a Discord attachment's description):
which job it is of and, in a grid, which picture is U1-U4. Nothing the message beside it does
not show: never the prompt (the message says it where its maker lets it be seen; said again
here, it would be heard twice). Each is far under Discord's 1024 characters: nothing a member
typed is in it."""

from __future__ import annotations

from inference.images import grid_shape

_ROWS = ("top", "bottom")
_COLUMNS = ("left", "right")
# A progress message's preview: a rough look at the render, not yet its result.
PREVIEW_DESCRIPTION = "A rough preview of the render under way; the finished result follows."


def _along(at: int, of: int, names: tuple[str, str], line: str) -> str:
    """Where ``at`` is among ``of`` rows or columns: a word for two (a grid of up to four
    pictures, as every job's is), else a number."""
    if of == 1:
        return ""
    return names[at] if of == len(names) else f"{line} {at + 1}"


def _place(index: int, columns: int, rows: int) -> str:
    row, column = divmod(index, columns)
    words = (_along(row, rows, _ROWS, "row"), _along(column, columns, _COLUMNS, "column"))
    return " ".join(word for word in words if word)


def grid_place(index: int, count: int) -> str:
    """Where picture ``index`` is in the grid of ``count`` (``grid_shape``): "top right"."""
    return _place(index, *grid_shape(count))


def result_description(job_id: str, count: int, *, comparison: bool) -> str:
    """A job's result: its one picture, a comparison's labelled grid, or the grid of its
    ``count`` pictures with where each of U1-U4 is (an empty cell said too)."""
    if comparison:
        return (
            f"A comparison of job {job_id}: {count} pictures in a grid, each labelled with "
            "the settings it was made with."
        )
    if count <= 1:  # one picture (a result journaled with its composed PNG only: that one)
        return f"The picture of job {job_id}."
    columns, rows = grid_shape(count)
    places = ", ".join(f"U{index + 1} {_place(index, columns, rows)}" for index in range(count))
    empty = [_place(index, columns, rows) for index in range(count, columns * rows)]
    if empty:
        places += f"; the {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
    return f"{count} pictures of job {job_id}, {columns} across and {rows} down: {places}."


def picture_description(job_id: str, index: int, count: int) -> str:
    """Picture ``index`` of a job of ``count`` posted alone (U1-U4, /show, a copy): which U
    of its grid it is, and where it was there."""
    if count == 1:
        return f"The picture of job {job_id}."
    place = grid_place(index, count)
    return f"Picture {index + 1} of job {job_id}: U{index + 1}, {place} in its grid."

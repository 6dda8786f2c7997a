"""The member's refusal of a model that is not installed: it names only models they may use
in that server (``moderation.model_allowed``), and only a few of those, never every model on
disk. The engine cannot know a server's list: its own error names none (for operators, it
logs what is installed: ``inference.registry``)."""

from __future__ import annotations

from collections.abc import Collection
from difflib import get_close_matches

from bot.user_errors import Reason, UserError

__all__ = ["MAX_NAMED_MODELS", "model_not_installed"]

# Up to this many models the member may use are all named; beyond it, the closest few to what
# they typed (as diffusers' "did you mean"), and /models lists the rest.
MAX_NAMED_MODELS = 10
_CLOSEST = 3


def model_not_installed(model: str, shown_as: str, usable: Collection[str]) -> UserError:
    """The refusal of ``model`` (``shown_as``: the name as the message may quote it, escaped
    and bounded), which is not installed, naming some of the installed models the member may
    use here (``usable``)."""
    names = sorted(usable)
    if not names:
        choices = "none you may use is installed"
    elif len(names) <= MAX_NAMED_MODELS:
        choices = f"you may use: {', '.join(names)}"
    elif closest := get_close_matches(model, names, n=_CLOSEST):
        choices = f"did you mean {' or '.join(closest)}? /models lists those you may use"
    else:
        choices = "/models lists those you may use"
    return UserError(f"Model '{shown_as}' is not installed on this bot; {choices}.", Reason.MODEL)

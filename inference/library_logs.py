"""diffusers' and transformers' own loggers, sent through the process's: each library writes to
stderr through a handler of its own, past the process's redaction and JSON lines, and their
warnings may quote a prompt (Flux's and SD3's pipelines log what they cut off past CLIP's 77
tokens). Every place that imports either library for work calls ``through_process_logs`` on
its logging module: the engine, and the bot's captioner and segmenter (a bot whose renders run
on a broker's workers builds no engine)."""

from __future__ import annotations

from types import ModuleType


def through_process_logs(library_logging: ModuleType) -> None:
    """``library_logging`` (``diffusers.utils.logging``, ``transformers.utils.logging``): no
    progress bars (a server logs), no handler of its own, its records through the root logger,
    errors only (their warnings are for a notebook's user, and may quote a member's prompt)."""
    library_logging.disable_progress_bar()
    library_logging.disable_default_handler()
    library_logging.enable_propagation()
    library_logging.set_verbosity_error()

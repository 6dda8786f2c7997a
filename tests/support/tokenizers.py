"""A test session reads each CLIP tokenizer folder once.

Loading a tiny model spends most of its time in ``CLIPTokenizer.from_pretrained`` (decoding
the 49,408-token vocabulary and its merges: 0.1-0.35 s a read on the 2-core CI machine, about
0.5 s when it is busy), and the suite loads tiny models about 300 times: every bot an
end-to-end test starts, every engine an inference test builds. Nothing changes a pipeline's
tokenizer (Easel reads its special token ids, and its own ``inference.prompts`` tokenizer
encodes SD prompts), so pipelines may share one tokenizer object; a copy would cost as much as
the read. A call sets its padding on the object for that call: two threads encoding with one
tokenizer at once (an SD3 or Flux prompt; no test does) could meet each other's settings. The
folder's bytes are the key: a folder rewritten with other files is read again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_loaded: dict[str, Any] = {}
_lock = threading.Lock()


def _folder_key(folder: Path, subfolder: str, options: dict[str, Any]) -> str | None:
    """What the read depends on: the folder's files and the options; None when the folder is
    not a local one (nothing to cache)."""
    directory = folder / subfolder if subfolder else folder
    if not directory.is_dir():
        return None
    digest = hashlib.sha256(repr(sorted(options.items())).encode())
    for file in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def share_clip_tokenizers() -> Callable[[], None]:
    """Serve ``CLIPTokenizer.from_pretrained`` from a cache for the rest of the process;
    returns the undo."""
    from transformers import CLIPTokenizer

    original = CLIPTokenizer.from_pretrained.__func__  # type: ignore[attr-defined]
    own = CLIPTokenizer.__dict__.get("from_pretrained")  # None: inherited

    def from_pretrained(cls: type[CLIPTokenizer], *args: Any, **options: Any) -> Any:
        # The folder comes first, or by name (diffusers' single-file loader names it).
        others = dict(options)
        named = others.pop("pretrained_model_name_or_path", None)
        folders = [*args, *([] if named is None else [named])]
        key = None
        if len(folders) == 1:
            key = _folder_key(Path(folders[0]), others.get("subfolder") or "", others)
        if key is None:
            return original(cls, *args, **options)
        key = f"{cls.__qualname__}:{key}"
        with _lock:  # concurrent first loads (a worker thread per device) read once
            if key not in _loaded:
                _loaded[key] = original(cls, *args, **options)
            return _loaded[key]

    CLIPTokenizer.from_pretrained = classmethod(from_pretrained)  # type: ignore[assignment,method-assign]

    def undo() -> None:
        if own is None:
            del CLIPTokenizer.from_pretrained
        else:
            CLIPTokenizer.from_pretrained = own
        _loaded.clear()

    return undo

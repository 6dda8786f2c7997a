"""Stand-in checkpoint files for tests that list or hash models without loading them."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def stand_in_checkpoint(path: Path, content: bytes = b"weights") -> Path:
    """A whole ``.safetensors`` file the registry offers, whose one tensor (bytes, ``U8``) is
    ``content``, so that files of different contents hash differently (whole or tensors
    only); a file longer than its header says is not whole (safetensors refuses it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "content": {"dtype": "U8", "shape": [len(content)], "data_offsets": [0, len(content)]}
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format's alignment of the data that follows
    path.write_bytes(struct.pack("<Q", len(text)) + text + content)
    return path

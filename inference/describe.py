"""``/describe``: prompt suggestions for a picture from a local BLIP captioning model.

The model is read from a folder the operator downloaded (never fetched), loaded on first use
and run on the CPU on a thread of its own (``inference.model_thread``), so captions never wait
for renders nor hold up the event loop, asyncio's shared pool or a device thread.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from inference.images import eight_bit, upright
from inference.library_logs import through_process_logs
from inference.model_thread import ModelThread
from inference.not_installed import not_installed
from inference.registry import config_json
from inference.types import RenderFailed

SUGGESTIONS = 4
# Beams searched for the suggestions: more than are kept, so near-duplicates can be dropped.
_BEAMS = 8
_MAX_CAPTION_TOKENS = 40
# Members' pictures waiting for the captioner at once (one each); more are refused rather
# than queued for long.
MAX_WAITING = 8
# What a BLIP model's config.json says it is (``BlipForConditionalGeneration`` loads it).
_CAPTIONER_MODEL_TYPE = "blip"


class Captioner:
    """One BLIP model on its own thread; a member's ``describe`` is awaited inside their place
    in the thread's line (``thread.place``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.thread = ModelThread("easel-describe", MAX_WAITING)
        self._loaded: tuple[Any, Any] | None = None  # loaded on the thread, on first use

    async def describe(self, picture: bytes) -> list[str]:
        """Up to ``SUGGESTIONS`` different captions of the picture (a PNG, JPEG or WebP the
        bot checked), read upright by its EXIF orientation, best first."""
        return await self.thread.run(self._describe, picture)

    def close(self) -> None:
        self.thread.close()

    def _describe(self, picture: bytes) -> list[str]:
        # Here, not at the top: the bot imports this module at start, and torch with
        # transformers would cost seconds before it logs in (tests/unit/test_light_imports.py).
        import torch

        processor, model = self._model()
        inputs = processor(images=_decoded(picture), return_tensors="pt")
        with torch.inference_mode():
            outputs = model.generate(
                **inputs,
                num_beams=_BEAMS,
                num_return_sequences=_BEAMS,
                max_new_tokens=_MAX_CAPTION_TOKENS,
                do_sample=False,
            )
        captions: list[str] = []
        for output in outputs:
            caption = " ".join(processor.decode(output, skip_special_tokens=True).split())
            if caption and caption not in captions:
                captions.append(caption)
        if not captions:
            raise RenderFailed("the captioning model found nothing to say about this picture")
        return captions[:SUGGESTIONS]

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import transformers.utils.logging
            from transformers import BlipForConditionalGeneration, BlipProcessor

            from inference.owned_weights import own_weights

            through_process_logs(transformers.utils.logging)

            if (problem := captioner_problem(self.folder)) is not None:
                raise RenderFailed(str(not_installed("the captioning model", problem)))
            processor = BlipProcessor.from_pretrained(self.folder, local_files_only=True)
            model = BlipForConditionalGeneration.from_pretrained(
                self.folder, local_files_only=True
            ).eval()
            own_weights(model)  # out of the file's mapped pages: a ``cp`` over it ends nothing
            self._loaded = processor, model
        return self._loaded


def captioner_problem(folder: Path) -> str | None:
    """Why ``folder`` (``EASEL_CAPTIONER_DIR``) holds no captioning model ``/describe`` loads
    (None: it looks like one): a BLIP model folder, whose config.json says so."""
    needs = "it needs a BLIP captioning model folder with config.json"
    if not folder.exists():
        return f"EASEL_CAPTIONER_DIR={folder} does not exist: {needs}"
    if not folder.is_dir():
        return f"EASEL_CAPTIONER_DIR={folder} is a file, not a folder: {needs}"
    config = folder / "config.json"
    if not config.is_file():
        return f"no captioning model in {folder} (EASEL_CAPTIONER_DIR): {needs}"
    try:
        model_type = config_json(config).get("model_type")
    except (OSError, ValueError, RecursionError, AttributeError) as error:
        return f"{config} does not read as a model's config ({error}): {needs}"
    if model_type != _CAPTIONER_MODEL_TYPE:
        return f"{folder} (EASEL_CAPTIONER_DIR) holds a {model_type!r} model, not BLIP: {needs}"
    return None


def _decoded(picture: bytes) -> Image.Image:
    """The picture as shown, in RGB. The bot's check reads only a JPEG's or WebP's header
    (a picture sent in direct messages is not decoded before it comes here), so a truncated
    or corrupt file fails only now: as a reason the member can act on."""
    try:
        with Image.open(io.BytesIO(picture)) as image:
            image.load()  # a PNG's orientation may come after its pixels
            return eight_bit(upright(image)).convert("RGB")
    except (Image.DecompressionBombError, SyntaxError, OSError, ValueError):
        raise RenderFailed(
            "the picture could not be decoded (its file is cut short or damaged); "
            "send it again, saved as PNG or JPEG"
        ) from None

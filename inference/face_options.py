"""What a request asks of faces, read from ``RenderRequest.options`` (pure: the bot builds
and checks these without torch or OpenCV).

``face_restore``: restore each face with a restorer (True: the first installed; a name: that
one). ``fix_faces``: the ADetailer-style pass, each face re-rendered as an only-masked inpaint
at the model's native size with ``fix_faces_prompt`` (default: the picture's prompt), the
picture's seed and ``fix_faces_strength``. Both run after the picture is made (fix first,
then restore), or on a stored picture for the "faces" mode (the Fix faces button).
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.img2img_steps import Img2ImgSteps
from inference.types import RenderInputError

# What the infotext's "ADetailer model" says when OpenCV's Haar cascade found the faces.
HAAR_DETECTOR = "haar frontal face"
FACE_RESTORE = "face_restore"
FIX_FACES = "fix_faces"
FIX_FACES_PROMPT = "fix_faces_prompt"
FIX_FACES_STRENGTH = "fix_faces_strength"
FIX_FACES_CONFIDENCE = "fix_faces_confidence"
# ADetailer's defaults: denoising 0.4, confidence 0.3, dilate 4 px, mask blur 4, padding 32.
DEFAULT_FIX_STRENGTH = 0.4
DEFAULT_FIX_CONFIDENCE = 0.3
FIX_DILATION = 4
FIX_MASK_BLUR = 4
FIX_PADDING = 32
# Easel's infotext key for the seed a fix pass over a stored picture drew (🔄), where it is
# not the picture's: ADetailer renders at the picture's seed and has no key for another.
FIX_SEED_KEY = "ADetailer seed"
# ADetailer's (the web UI's) VAE for the model's own, no VAE file's.
NO_VAE = "None"
# A face pass below this strength would change nothing visible.
MIN_FIX_STRENGTH = 0.05


@dataclass(frozen=True)
class FaceOptions:
    restore: bool = False
    restorer: str | None = None  # None: the first restorer installed
    fix: bool = False
    prompt: str | None = None  # None: the picture's own prompt
    strength: float = DEFAULT_FIX_STRENGTH
    confidence: float = DEFAULT_FIX_CONFIDENCE

    @property
    def wanted(self) -> bool:
        return self.restore or self.fix

    @classmethod
    def from_options(cls, options: dict[str, object]) -> FaceOptions:
        restore = options.get(FACE_RESTORE, False)
        if not isinstance(restore, bool | str) or restore == "":
            raise RenderInputError(
                f"face restore must be true or a face restorer's name, got {restore!r}"
            )
        prompt = options.get(FIX_FACES_PROMPT)
        if prompt is not None and not isinstance(prompt, str):
            raise RenderInputError(f"the fix-faces prompt must be text, got {prompt!r}")
        return cls(
            restore=restore is not False,
            restorer=restore if isinstance(restore, str) else None,
            fix=bool(options.get(FIX_FACES, False)),
            prompt=prompt.strip() or None if prompt is not None else None,
            strength=_fraction(
                options, FIX_FACES_STRENGTH, DEFAULT_FIX_STRENGTH, MIN_FIX_STRENGTH, "strength"
            ),
            confidence=_fraction(
                options, FIX_FACES_CONFIDENCE, DEFAULT_FIX_CONFIDENCE, 0.0, "confidence"
            ),
        )

    def fix_steps(self, steps: int) -> int:
        """Sampling steps one face's pass runs on the picture's ``steps`` schedule, as
        img2img's (none without ``fix``)."""
        return Img2ImgSteps.img2img(steps, self.strength).run if self.fix else 0


def _fraction(options: dict[str, object], key: str, default: float, low: float, what: str) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= 1:
        raise RenderInputError(f"fix-faces {what} must be a number from {low} to 1, got {value!r}")
    return float(value)

"""Faces in a picture: found by a local detector, restored by a face restorer, and the masks
the ADetailer-style pass (``inference.passes.faces``) repaints.

Detection runs on the CPU with OpenCV: YuNet (``cv2.FaceDetectorYN``) from an ``.onnx`` file in
``models/adetailer/`` when there is one, else the frontal-face Haar cascade that ships inside
OpenCV, so detection always works and nothing is ever fetched.

A restorer (GFPGAN, RestoreFormer: what spandrel loads as a "FaceSR" model) works
on one face at a time, as the web UI uses them: a square crop around the face, resized to the
restorer's 512x512, restored, resized back and pasted through a feathered mask, so pixels away
from a face never change.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from spandrel import ImageModelDescriptor

from inference.face_options import HAAR_DETECTOR
from inference.file_versions import file_stamp
from inference.model_upscale import SpandrelModel, read_spandrel_model
from inference.types import RenderInputError

# YuNet ONNX files are looked for here (ADetailer's folder in the web UI).
FACE_DETECTOR_FOLDER = "adetailer"
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Face restorers are trained on 512x512 aligned faces.
RESTORE_SIZE = 512
# Context kept on each side of a face box when it is cropped for the restorer, as a fraction
# of the box's side: restorers expect the face to fill about half of their input.
RESTORE_MARGIN = 0.5
# The pasted face fades out over this fraction of its crop's side, so no seam shows.
FEATHER_FRACTION = 0.125
# Faces smaller than this (pixels per side) are too small to re-detail or restore.
MIN_FACE_SIDE = 16
DEFAULT_CONFIDENCE = 0.3  # ADetailer's default detection threshold
MAX_FACES = 8  # the largest ones are kept: each costs a pass


@dataclass(frozen=True)
class FaceBox:
    """A face's box in picture pixels (right and bottom exclusive) and the detector's score
    (1.0 from the Haar cascade, which gives none)."""

    left: int
    top: int
    right: int
    bottom: int
    confidence: float = 1.0

    @property
    def area(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    def square_around(self, margin: float, image_size: tuple[int, int]) -> FaceBox:
        """A square centred on the face, ``margin`` of its side larger on each side, moved
        (then shrunk) to stay inside the picture."""
        width, height = image_size
        side = min(
            round(max(self.right - self.left, self.bottom - self.top) * (1 + 2 * margin)),
            width,
            height,
        )
        centre_x, centre_y = (self.left + self.right) / 2, (self.top + self.bottom) / 2
        left = int(min(max(centre_x - side / 2, 0), width - side))
        top = int(min(max(centre_y - side / 2, 0), height - side))
        return FaceBox(left, top, left + side, top + side, self.confidence)

    def grown(self, pixels: int, image_size: tuple[int, int]) -> FaceBox:
        """The box ``pixels`` larger on each side (smaller when negative), inside the picture."""
        width, height = image_size
        return FaceBox(
            max(0, self.left - pixels),
            max(0, self.top - pixels),
            min(width, self.right + pixels),
            min(height, self.bottom + pixels),
            self.confidence,
        )


@dataclass(frozen=True)
class FaceDetector:
    """YuNet from ``path``, or OpenCV's own Haar cascade when ``path`` is None."""

    name: str
    path: Path | None = None

    def detect(self, image: Image.Image, confidence: float = DEFAULT_CONFIDENCE) -> list[FaceBox]:
        """The faces at or above ``confidence``, largest first (at most ``MAX_FACES``)."""
        pixels = np.asarray(image.convert("RGB"))
        faces = _yunet_faces(pixels, self.path, confidence) if self.path else _haar_faces(pixels)
        faces = [f for f in faces if min(f.right - f.left, f.bottom - f.top) >= MIN_FACE_SIDE]
        return sorted(faces, key=lambda face: face.area, reverse=True)[:MAX_FACES]


def face_detector(models_dir: Path) -> FaceDetector:
    """YuNet when ``models/adetailer/`` holds an ``.onnx`` file (the first by name), else the
    Haar cascade."""
    folder = models_dir / FACE_DETECTOR_FOLDER
    onnx = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    if onnx:
        return FaceDetector(onnx[0].stem, onnx[0])
    return FaceDetector(HAAR_DETECTOR)


_HAAR_LOCK = threading.Lock()


@functools.cache
def _haar_cascade() -> Any:
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / HAAR_CASCADE))  # type: ignore[attr-defined]
    if cascade.empty():
        raise RenderInputError(f"OpenCV's {HAAR_CASCADE} is missing: reinstall opencv")
    return cascade


def _haar_faces(pixels: np.ndarray[Any, Any]) -> list[FaceBox]:
    gray = cv2.equalizeHist(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))
    with _HAAR_LOCK:  # one cascade for every device thread; OpenCV does not promise it is safe
        found = _haar_cascade().detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE_SIDE, MIN_FACE_SIDE)
        )
    return [FaceBox(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def _yunet_faces(pixels: np.ndarray[Any, Any], path: Path, confidence: float) -> list[FaceBox]:
    height, width = pixels.shape[:2]
    try:
        detector = cv2.FaceDetectorYN.create(str(path), "", (width, height), confidence)
    except cv2.error:
        raise RenderInputError(
            f"face detector {path.name} in models/{FACE_DETECTOR_FOLDER}/ is not a YuNet "
            "ONNX model OpenCV can read; remove it to use the built-in Haar detector"
        ) from None
    _, found = detector.detect(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    faces = []
    for row in [] if found is None else found:
        x, y, w, h = (float(v) for v in row[:4])
        box = FaceBox(int(x), int(y), int(x + w), int(y + h), round(float(row[14]), 3))
        faces.append(box.grown(0, (width, height)))
    return faces


@dataclass
class FaceRestorer(SpandrelModel):
    """A loaded restorer (in float32: spandrel's face models do not support half precision)."""

    @property
    def architecture(self) -> str:
        """What the web UI's infotext calls it: GFPGAN, RestoreFormer."""
        return str(self.descriptor.architecture.name)


def load_face_restorer(name: str, path: Path, device: str) -> FaceRestorer:
    """Load ``path`` with spandrel; refuse anything that is not an RGB face restorer."""
    stamp = file_stamp(path)
    descriptor = read_spandrel_model(path, f"face restorer {name!r}")
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "FaceSR":
        raise RenderInputError(
            f"face restorer {name!r} ({path.name}) is a {descriptor.architecture.name} model "
            f"for {descriptor.purpose}, not a face restorer"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise RenderInputError(f"face restorer {name!r} does not work on RGB pictures")
    # Restorers run in float32: spandrel's face models do not support half precision.
    descriptor.to(torch.device(device), torch.float32).eval()
    return FaceRestorer(name, path, stamp, descriptor)


def restore_faces(restorer: FaceRestorer, image: Image.Image, faces: list[FaceBox]) -> Image.Image:
    """``image`` with each face restored and pasted back through a feathered square mask;
    pixels outside the faces' crops are left exactly as they were."""
    result = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for face in faces:
        crop = face.square_around(RESTORE_MARGIN, image.size)
        side = crop.right - crop.left
        piece = image.convert("RGB").crop(crop.as_tuple())
        piece = piece.resize((RESTORE_SIZE, RESTORE_SIZE), Image.Resampling.LANCZOS)
        restored = _run_restorer(restorer, piece).resize((side, side), Image.Resampling.LANCZOS)
        weight = feathered_weight(side, max(1, round(side * FEATHER_FRACTION)))[..., None]
        region = result[crop.top : crop.bottom, crop.left : crop.right]
        blended = region * (1 - weight) + np.asarray(restored, dtype=np.float32) * weight
        result[crop.top : crop.bottom, crop.left : crop.right] = blended
    return Image.fromarray(np.round(np.clip(result, 0, 255)).astype(np.uint8))


def _run_restorer(restorer: FaceRestorer, face: Image.Image) -> Image.Image:
    descriptor = restorer.descriptor
    pixels = torch.from_numpy(np.asarray(face, dtype=np.float32) / 255.0).permute(2, 0, 1)
    with torch.inference_mode():
        output = descriptor(pixels.unsqueeze(0).to(descriptor.device, descriptor.dtype))
    restored = restorer.finite(output[0].float().cpu().permute(1, 2, 0).numpy(), "face restorer")
    return Image.fromarray(np.round(np.clip(restored, 0, 1) * 255).astype(np.uint8))


def feathered_weight(side: int, feather: int) -> np.ndarray[Any, Any]:
    """A ``side`` x ``side`` weight: 1 inside, falling linearly to 0 over ``feather`` pixels
    towards each edge."""
    ramp = np.clip((np.minimum(np.arange(side), np.arange(side)[::-1]) + 0.5) / feather, 0, 1)
    return np.outer(ramp, ramp).astype(np.float32)


def face_mask(image_size: tuple[int, int], face: FaceBox, dilation: int) -> Image.Image:
    """White over ``face`` grown by ``dilation`` pixels (ADetailer's "dilate"), black
    elsewhere: the region the fix-faces pass repaints."""
    mask = Image.new("L", image_size, 0)
    mask.paste(255, face.grown(dilation, image_size).as_tuple())
    return mask

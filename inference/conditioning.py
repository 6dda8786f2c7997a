"""The web UI's prompt encoder: weighted 75-token chunks to text-encoder conditioning.

Behaviour (as the web UI documents it):

* each ``Chunk`` (75 tokens at most, cut by ``inference.prompts.chunk_tokens``) is wrapped
  in start/end tokens to 77 ids and encoded on its own; the chunks' hidden states are
  concatenated along the sequence axis, so a 150-token prompt gives 154 positions;
* for encoders whose padding token differs from the end token (OpenCLIP: SD2, SDXL's second
  encoder) every position after the first end token holds the padding token;
* SD1.x/SD2 use the hidden state of layer ``-clip_skip`` followed by the final layer norm
  (``clip_skip`` 1 is the last layer); SDXL uses both encoders' penultimate hidden states
  concatenated on the feature axis (no final norm, clip skip ignored as in the web UI) and
  the second encoder's pooled output of the first chunk;
* per-token weights multiply the hidden states, then the result is rescaled so its mean is
  the unweighted mean (the web UI's "original mean" emphasis), per encoder; a factor that
  came from a weighted mean near 0 or of the other sign is bounded (``rescale_bounds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inference.limits import DEFAULT_CLIP_SKIP as DEFAULT_CLIP_SKIP
from inference.prompts import Chunk
from inference.prompts.weights import MAX_WEIGHT
from inference.types import RenderInputError

EMPTY_CHUNK = Chunk((), ())


@dataclass(frozen=True)
class Conditioning:
    """One text's encoding: ``hidden`` is (1, 77 * chunks, features); ``pooled`` (1, P) for
    SDXL, else ``None``."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None

    @property
    def length(self) -> int:
        return int(self.hidden.shape[1])


def chunk_ids(
    chunk: Chunk, start_id: int, end_id: int, pad_id: int
) -> tuple[list[int], list[float]]:
    """77 ids and weights for ``chunk``: start, tokens, end tokens to the end, then (when the
    padding token differs from the end token) padding after the first end token."""
    ids, weights = chunk.model_input(start_id, end_id, end_id)
    if pad_id != end_id:
        first_end = ids.index(end_id, 1)
        ids[first_end + 1 :] = [pad_id] * (len(ids) - first_end - 1)
    return ids, weights


# The largest factor emphasis applies: well within float16's range (65,504), the dtype of CUDA
# renders. It binds only where every weight is under 0.01 (``MAX_WEIGHT`` / the largest
# binds first otherwise); an encoder's chunk always holds weights of 1 (its start and end).
MAX_RESCALE = 1e4


def emphasize(hidden: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Multiply each position by its weight, then restore the unweighted mean as the web UI
    does (times the unweighted mean over the weighted one), unless that factor lies outside
    ``rescale_bounds``, is not positive (the weighted mean of the other sign: it would negate
    every position) or not finite (a weighted mean of exactly 0). Ordinary emphasis gets the
    web UI's factor (bit for bit in float32); past the bounds it is clamped, and one not
    positive or not finite is not applied. Nothing is read back from the device."""
    if all(weight == 1 for weight in weights):
        return hidden  # exactly the plain encoding, without a rounding round-trip
    # Built on the CPU and copied non-blocking: a blocking copy waits for the queued GPU work.
    weight_tensor = torch.tensor(weights).to(hidden.device, hidden.dtype, non_blocking=True)
    weighted = hidden * weight_tensor.reshape(1, -1, 1)
    # In float32: the float16 one overflows where the weighted mean is tiny.
    rescale = hidden.mean(dtype=torch.float32) / weighted.mean(dtype=torch.float32)
    lowest, highest = rescale_bounds(weights)
    applied = torch.where(rescale.isfinite() & (rescale > 0), rescale.clamp(lowest, highest), 1.0)
    return weighted * applied.to(hidden.dtype)


def rescale_bounds(weights: Sequence[float]) -> tuple[float, float]:
    """The factors ``emphasize`` lets the web UI's mean restoring apply for ``weights``.

    Where every position's mean has one sign and every weight is positive, the weighted mean
    is the unweighted one times an average of the weights, so the factor lies between 1 / the
    largest weight and 1 / the smallest. Positions whose means have either sign take it past
    that, a little where they don't cancel (over 77 ordinary prompts on the tiny SDXL: 1.57
    times below, 1.17 above), by any amount where they do (its ``(a:14.4226) cat``: 308,725
    times). So each end allows twice its value. Negative weights count by their magnitude. A
    weight of 0 takes its position's share out of the weighted mean, which the weights can't
    tell (a position holding most of the mean needs any factor). Above, the factor never
    takes a position past ``MAX_WEIGHT`` times its encoding, the most planning lets a prompt
    ask for (where a weight is 0, the only bound: a weight of 42 times a factor of thousands
    overflowed float16), nor past ``MAX_RESCALE``."""
    magnitudes = [abs(weight) for weight in weights]
    largest, smallest = max(magnitudes), min(magnitudes)
    if largest == 0:
        return 1.0, 1.0  # all weighted 0: no mean to restore
    highest = min(MAX_WEIGHT / largest, MAX_RESCALE)
    if smallest > 0:
        highest = min(2 / smallest, highest)
    return min(1 / (2 * largest), highest), highest


def pad_to_chunks(conditioning: Conditioning, chunks: int, empty: Conditioning) -> Conditioning:
    """Append empty-chunk encodings until ``conditioning`` spans ``chunks`` chunks (the web
    UI's "pad prompt/negative prompt to the same length")."""
    missing = chunks - conditioning.length // empty.length
    if missing <= 0:
        return conditioning
    padding = empty.hidden.expand(missing, -1, -1).reshape(1, -1, empty.hidden.shape[2])
    return Conditioning(torch.cat([conditioning.hidden, padding], dim=1), conditioning.pooled)


@dataclass(frozen=True)
class _TextEncoder:
    model: Any  # a transformers CLIPTextModel(WithProjection)
    pad_id: int
    # Hidden-state index and whether the final layer norm follows (SD1.x/SD2 clip skip).
    layer: int
    final_norm: bool


class PromptEncoder:
    """Encodes chunk sequences with a diffusers SD / SD2 / SDXL pipeline's text encoder(s).

    Encodings are cached by chunk sequence: a render encodes each scheduled text once.
    """

    def __init__(self, pipeline: Any, clip_skip: int = DEFAULT_CLIP_SKIP) -> None:
        # The SDXL refiner has only the second (OpenCLIP) encoder and tokenizer.
        tokenizer = pipeline.tokenizer or pipeline.tokenizer_2
        self.start_id: int = tokenizer.bos_token_id
        self.end_id: int = tokenizer.eos_token_id
        second = getattr(pipeline, "text_encoder_2", None)
        self.is_sdxl = second is not None
        if self.is_sdxl:
            pairs = ((pipeline.text_encoder, pipeline.tokenizer), (second, pipeline.tokenizer_2))
            self.encoders = [
                _TextEncoder(model, its_tokenizer.pad_token_id, -2, False)
                for model, its_tokenizer in pairs
                if model is not None
            ]
        else:
            layers = pipeline.text_encoder.config.num_hidden_layers
            if not 1 <= clip_skip <= layers:
                # The member's input, not a fault: told as it is (and refunded).
                raise RenderInputError(
                    f"clip skip must be in 1..{layers}, got {clip_skip} "
                    f"(this model's text encoder has {layers} layers)"
                )
            self.encoders = [
                _TextEncoder(pipeline.text_encoder, tokenizer.pad_token_id, -clip_skip, True)
            ]
        self._cache: dict[tuple[Chunk, ...], Conditioning] = {}

    @property
    def empty(self) -> Conditioning:
        """The encoding of one empty chunk (what padding appends)."""
        return self.encode([EMPTY_CHUNK])

    def encode(self, chunks: Sequence[Chunk]) -> Conditioning:
        key = tuple(chunks) or (EMPTY_CHUNK,)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._encode(key)
            self._cache[key] = cached
        return cached

    def _encode(self, chunks: tuple[Chunk, ...]) -> Conditioning:
        per_encoder = []
        pooled = None
        for encoder in self.encoders:
            device = encoder.model.device
            encoded_chunks = []
            for index, chunk in enumerate(chunks):
                ids, weights = chunk_ids(chunk, self.start_id, self.end_id, encoder.pad_id)
                output = encoder.model(
                    torch.tensor([ids], device=device), output_hidden_states=True
                )
                if encoder.final_norm and encoder.layer == -1:
                    hidden = output.last_hidden_state  # already normed by the model
                else:
                    hidden = output.hidden_states[encoder.layer]
                    if encoder.final_norm:
                        hidden = _final_layer_norm(encoder.model)(hidden)
                encoded_chunks.append(emphasize(hidden, weights))
                if index == 0 and hasattr(output, "text_embeds"):
                    pooled = output.text_embeds
            per_encoder.append(torch.cat(encoded_chunks, dim=1))
        return Conditioning(torch.cat(per_encoder, dim=2), pooled)


def _final_layer_norm(model: Any) -> Any:
    # transformers 5 moved the text transformer's modules up onto the model itself.
    return getattr(model, "text_model", model).final_layer_norm

"""LoRAs, textual-inversion embeddings and VAE overrides, applied to a pipeline for one job.

Everything here is temporary: ``applied_loras`` and ``applied_embeddings`` are context
managers that leave the pipeline exactly as they found it (same modules, same weights), so a
plain job after a LoRA job renders the plain job's pixels bit for bit.

Embeddings: our prompt chunker has its own CLIP tokenizer, so an embedding's name arrives
as ordinary token ids. For the job each embedding gets placeholder ids past the end of the
vocabulary (rows appended to a copy of each text encoder's token table); the name's tokens
in every chunk are replaced by those ids, one per vector, and an embedding never straddles
two 75-token chunks (it moves whole to the next one, as in the web UI).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors import SafetensorError

from inference.file_versions import being_written
from inference.owned_weights import WeightsCutShort, read_safetensors
from inference.prompts import Chunk, ExtraNetwork, PromptPlan, SubPromptPlan, default_tokenizer
from inference.prompts.tokenizer import CHUNK_LENGTH
from inference.registry import NO_LONGER_INSTALLED
from inference.types import RenderFailed, RenderInputError

log = logging.getLogger(__name__)

# Adapter names are ours, so they never clash with anything a user names a file.
_ADAPTER_PREFIX = "easel_lora_"
# Web-UI embeddings keep their vectors under one of these keys.
_WEB_UI_EMBEDDING_KEYS = ("emb_params", "string_to_param.*", "string_to_param")
# SDXL embeddings hold one tensor per text encoder.
_SDXL_EMBEDDING_KEYS = ("clip_l", "clip_g")
# What a LoRA file that does not fit the model, or was removed since it was listed, raises.
_LORA_LOAD_ERRORS = (ValueError, KeyError, RuntimeError, SafetensorError, FileNotFoundError)
# Why an add-on whose weights hold NaN or infinite values is skipped: its pictures would come
# out blank (every pixel not a number, delivered black).
BROKEN_WEIGHTS = "its weights hold not-a-number or infinite values (a broken file)"
# Keys of a VAE saved in the original (LDM) layout, as the web UI's VAE files are.
_LDM_VAE_MARKERS = ("encoder.down.", "first_stage_model.", "decoder.up.")


def merged_loras(networks: Sequence[ExtraNetwork]) -> tuple[ExtraNetwork, ...]:
    """One entry per LoRA name, sorted (a name tagged twice adds up its weights, as two
    applications would); the tuple is also what tells two jobs' LoRA sets apart."""
    merged: dict[str, ExtraNetwork] = {}
    for network in networks:
        seen = merged.get(network.name)
        if seen is not None:
            network = dataclasses.replace(
                seen,
                weight=seen.weight + network.weight,
                unet_weight=seen.unet_weight + network.unet_weight,
            )
        merged[network.name] = network
    return tuple(merged[name] for name in sorted(merged))


@contextmanager
def _quiet_lora_loading() -> Iterator[None]:
    # peft's partial state-dict load makes transformers print a "MISSING weights" report
    # for every base weight (the LoRA file only holds its own), and peft warns that a second
    # adapter joins the first, which is what we want.
    previous = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
            yield
    finally:
        transformers.utils.logging.set_verbosity(previous)


@dataclass(frozen=True)
class AppliedNetworks:
    """What a context manager below applied, and why it skipped the rest."""

    names: tuple[str, ...]
    # Each skipped network's name -> the member's warning about it: a picture is told only
    # about those its own prompt names (another member's job may share the call).
    skipped: Mapping[str, str]

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.skipped.values())


@contextmanager
def applied_loras(
    pipeline: Any, loras: Sequence[ExtraNetwork], files: Mapping[str, Path]
) -> Iterator[AppliedNetworks]:
    """Load ``loras`` (kohya/web UI or diffusers ``.safetensors``) for one job, with their
    text-encoder and UNet weights; one that is gone or still being written
    (``lora_not_loadable``), does not fit, or whose weights are not finite numbers, is
    skipped with a warning. All adapters are unloaded afterwards."""
    applied: list[str] = []
    skipped: dict[str, str] = {}
    adapters: list[str] = []
    weights: list[dict[str, float]] = []
    try:
        for index, lora in enumerate(loras):
            adapter = f"{_ADAPTER_PREFIX}{index}"
            path = files[lora.name]
            if (why := lora_not_loadable(lora.name, path)) is not None:
                skipped[lora.name] = why
                continue
            try:
                with _quiet_lora_loading():
                    pipeline.load_lora_weights(str(path), adapter_name=adapter)
            except _LORA_LOAD_ERRORS as error:
                log.warning("LoRA %s not loaded: %s", lora.name, error)
                gone = isinstance(error, FileNotFoundError)
                why = f"it is {NO_LONGER_INSTALLED}" if gone else "it does not fit this model"
                skipped[lora.name] = f"LoRA {lora.name!r} skipped: {why}"
                _forget_adapter(pipeline, adapter)
                continue
            if (broken := broken_lora(pipeline, adapter, lora.name)) is not None:
                skipped[lora.name] = broken
                continue
            adapters.append(adapter)
            applied.append(lora.name)
            weights.append(_component_weights(pipeline, adapter, lora))
        if adapters:
            pipeline.set_adapters(adapters, weights)
        yield AppliedNetworks(tuple(applied), skipped)
    finally:
        if adapters:
            pipeline.unload_lora_weights()


def lora_not_loadable(name: str, path: Path) -> str | None:
    """Why the LoRA ``name`` in ``path`` is skipped before it loads: gone (checked first:
    diffusers takes a path that is not a file for a Hub repository), or still being written
    (``being_written``: its load maps the file, and a copy cutting it short would end the
    process); None when it may load."""
    if not path.is_file():
        return f"LoRA {name!r} skipped: it is {NO_LONGER_INSTALLED}"
    if (why := being_written((path,))) is not None:
        return f"LoRA {name!r} skipped: {why}"
    return None


def _component_weights(pipeline: Any, adapter: str, lora: ExtraNetwork) -> dict[str, float]:
    """The tag's text-encoder weight for the text encoders, its UNet weight for the UNet,
    for the parts this LoRA actually has."""
    weights = {"unet": lora.unet_weight, "text_encoder": lora.weight, "text_encoder_2": lora.weight}
    present = pipeline.get_list_adapters()
    return {part: weight for part, weight in weights.items() if adapter in present.get(part, ())}


def broken_lora(pipeline: Any, adapter: str, name: str) -> str | None:
    """The member's warning when LoRA ``name``, just loaded as ``adapter``, holds weights that
    are not finite numbers (the adapter is dropped then: its pictures would come out blank);
    None when every weight it loaded is finite (one reading back from the device for all)."""
    loaded = [
        parameter
        for part in pipeline.get_list_adapters()
        for parameter_name, parameter in getattr(pipeline, part).named_parameters()
        if f".{adapter}." in parameter_name
    ]
    if all_finite(loaded):
        return None
    log.warning("LoRA %s not loaded: %s", name, BROKEN_WEIGHTS)
    _forget_adapter(pipeline, adapter)
    return f"LoRA {name!r} skipped: {BROKEN_WEIGHTS}"


# Whose finite numbers a float64 sum cannot overflow: each is at most float32's largest,
# 3.4e38 (bfloat16's is about that, float16's 65504, an 8-bit float's at most 1.7e38), so n of
# them sum to at most n * 3.4e38, under float64's 1.8e308 for any n below 5e269, more numbers
# than any memory holds. The float8 types (each this torch has) are also ones whose
# ``isfinite`` a CPU lacks (e4m3fn, e4m3fnuz, e5m2fnuz: NotImplementedError) or gets wrong
# (e8m0fnu: a NaN "finite").
_SUMMED_EXACTLY = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    *(
        dtype
        for name, dtype in vars(torch).items()
        if name.startswith("float8_") and isinstance(dtype, torch.dtype)
    ),
)
# Numbers summed at a time: torch copies what it sums to float64 first (8 bytes a number:
# 2 GiB for a 512 MiB float16 tensor summed whole), and 1M of them (an 8 MiB copy) stay in a
# CPU's cache (docs/performance.md).
_SUMMED_AT_ONCE = 1 << 20


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every number in ``tensors`` is finite (neither not-a-number nor infinite), read
    back from their device once for all. Those of ``_SUMMED_EXACTLY``'s types are summed in
    float64, ``_SUMMED_AT_ONCE`` numbers at a time, into one total (faster than
    ``isfinite().all()`` on a CPU, and the float8 types' only right check there:
    docs/performance.md): a not-a-number or an infinity makes the total not finite (+inf plus
    -inf is not-a-number), while finite numbers of those types never overflow it. Other
    types, and Apple's MPS (no float64), are checked number by number."""
    total: torch.Tensor | None = None
    checked: list[torch.Tensor] = []
    for t in tensors:
        if t.dtype in _SUMMED_EXACTLY and t.device.type != "mps":
            for part in t.reshape(-1).split(_SUMMED_AT_ONCE):
                # Added in place, none kept: a part's float64 copy always finds the last one's
                # memory free (kept sums between them left CPU memory growing by every copy).
                summed = torch.sum(part, dtype=torch.float64)
                total = summed if total is None else total.add_(summed)
        else:
            checked.append(torch.isfinite(t).all())
    return (total is None or bool(torch.isfinite(total))) and (
        not checked or bool(torch.stack(checked).all())
    )


def _forget_adapter(pipeline: Any, adapter: str) -> None:
    """Drop whatever a failed load left behind under ``adapter``."""
    if any(adapter in names for names in pipeline.get_list_adapters().values()):
        pipeline.delete_adapters(adapter)


def read_embedding(path: Path) -> tuple[torch.Tensor, ...]:
    """An embedding's vectors, one (vectors, features) tensor per text encoder it is for.

    Accepts the web UI's ``emb_params`` / ``string_to_param``, diffusers' ``learned_embeds``
    (one tensor under the token's name) and SDXL's ``clip_l`` + ``clip_g``. Read, not mapped
    (``inference.owned_weights``): a file copied over as it loads fails this read, never the
    process.
    """
    state = read_safetensors(path)
    if all(key in state for key in _SDXL_EMBEDDING_KEYS):
        tensors = tuple(state[key] for key in _SDXL_EMBEDDING_KEYS)
    elif key := next((k for k in _WEB_UI_EMBEDDING_KEYS if k in state), None):
        tensors = (state[key],)
    elif len(state) == 1:
        tensors = tuple(state.values())
    else:
        raise ValueError(f"unknown embedding layout (keys: {', '.join(sorted(state)[:5])})")
    if any(t.dim() == 0 for t in tensors):
        raise ValueError("it holds a single number, not vectors")
    if any(t.shape[-1] == 0 for t in tensors):  # no width to read its vectors' count from
        raise ValueError("its vectors hold no numbers")
    if not all_finite(tensors):
        raise ValueError(BROKEN_WEIGHTS)
    return tuple(t.reshape(-1, t.shape[-1]) for t in tensors)


@dataclass(frozen=True)
class EmbeddingPlaceholders:
    """The placeholder ids of every embedding applied to one pipeline call, by name: the
    pictures of a call may name different ones, and each reads only its own (``of``)."""

    # Each applied embedding's name -> (its name's ordinary token ids, its vectors' placeholder
    # ids). Two names may tokenize alike (the tokenizer lowercases: ``Sparkle``, ``sparkle``).
    named: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]

    def of(self, names: Sequence[str]) -> EmbeddingTokens:
        """The tokens of one picture's embeddings (``ImageJob.embeddings``): the other
        pictures' names are plain words for it; of its names that tokenize alike, the first."""
        shadowed = self.shadowed(names)
        return EmbeddingTokens(
            {
                self.named[name][0]: self.named[name][1]
                for name in names
                if name in self.named and name not in shadowed
            }
        )

    def shadowed(self, names: Sequence[str]) -> dict[str, str]:
        """Those of ``names`` that tokenize as one before them -> that one (``of`` reads it)."""
        first: dict[tuple[int, ...], str] = {}
        shadowed: dict[str, str] = {}
        for name in names:
            if name in self.named:
                ids = self.named[name][0]
                if ids in first:
                    shadowed[name] = first[ids]
                else:
                    first[ids] = name
        return shadowed


@dataclass(frozen=True)
class EmbeddingTokens:
    """How one picture's embedding names map to placeholder token ids."""

    # The name's ordinary token ids -> the placeholder ids standing for its vectors.
    placeholders: Mapping[tuple[int, ...], tuple[int, ...]]

    def plan(self, plan: PromptPlan) -> PromptPlan:
        """``plan`` with every embedding name replaced by its vectors' placeholders."""
        if not self.placeholders:
            return plan
        return dataclasses.replace(
            plan,
            subprompts=tuple(self._subprompt(sub) for sub in plan.subprompts),
            negative=self._subprompt(plan.negative),
        )

    def _subprompt(self, sub: SubPromptPlan) -> SubPromptPlan:
        schedule = tuple(
            dataclasses.replace(entry, chunks=self.chunks(entry.chunks)) for entry in sub.schedule
        )
        return dataclasses.replace(sub, schedule=schedule)

    def chunks(self, chunks: Sequence[Chunk]) -> tuple[Chunk, ...]:
        """Each chunk with names replaced, re-cut where the vectors made it longer than 75."""
        return tuple(piece for chunk in chunks for piece in _pack(self._groups(chunk)))

    def _groups(self, chunk: Chunk) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
        """The chunk as token groups: an embedding's placeholders form one unsplittable group."""
        names = sorted(self.placeholders, key=len, reverse=True)  # longest name first
        ids, weights = chunk.token_ids, chunk.weights
        groups: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
        position = 0
        while position < len(ids):
            name = next((n for n in names if ids[position : position + len(n)] == n), None)
            if name is None:
                groups.append(((ids[position],), (weights[position],)))
                position += 1
                continue
            placeholders = self.placeholders[name]
            groups.append((placeholders, (weights[position],) * len(placeholders)))
            position += len(name)
        return groups


def _pack(groups: Sequence[tuple[tuple[int, ...], tuple[float, ...]]]) -> list[Chunk]:
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    for group_ids, group_weights in groups:
        if ids and len(ids) + len(group_ids) > CHUNK_LENGTH:
            chunks.append(Chunk(tuple(ids), tuple(weights)))
            ids, weights = [], []
        ids += group_ids
        weights += group_weights
    if ids or not chunks:
        chunks.append(Chunk(tuple(ids), tuple(weights)))
    return chunks


def _text_encoders(pipeline: Any) -> list[Any]:
    second = getattr(pipeline, "text_encoder_2", None)
    return [pipeline.text_encoder] if second is None else [pipeline.text_encoder, second]


@contextmanager
def applied_embeddings(
    pipeline: Any, names: Sequence[str], files: Mapping[str, Path]
) -> Iterator[tuple[EmbeddingPlaceholders, AppliedNetworks]]:
    """Give each embedding in ``names`` placeholder ids in the text encoder(s) for one call;
    yields the placeholders and what was applied. The original token tables come back
    afterwards."""
    encoders = _text_encoders(pipeline)
    tables = [encoder.get_input_embeddings() for encoder in encoders]
    widths = [table.embedding_dim for table in tables]
    next_id = max(table.num_embeddings for table in tables)
    vectors: list[tuple[torch.Tensor, ...]] = []
    named: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    applied: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            tensors = read_embedding(files[name])
        except FileNotFoundError:
            skipped[name] = f"embedding {name!r} skipped: it is {NO_LONGER_INSTALLED}"
            continue
        except (ValueError, WeightsCutShort) as error:
            skipped[name] = f"embedding {name!r} skipped: {error}"
            continue
        shape = [t.shape[-1] for t in tensors]
        if shape != widths:
            skipped[name] = (
                f"embedding {name!r} skipped: made for text encoders of width {shape}, "
                f"this model's are {widths}"
            )
            continue
        count = tensors[0].shape[0]
        if not 1 <= count <= CHUNK_LENGTH:
            skipped[name] = (
                f"embedding {name!r} skipped: it has {count} vectors, at most "
                f"{CHUNK_LENGTH} fit a prompt chunk"
            )
            continue
        ids = tuple(default_tokenizer().encode(name))
        named[name] = (ids, tuple(range(next_id, next_id + count)))
        vectors.append(tensors)
        applied.append(name)
        next_id += count
    try:
        for index, (encoder, table) in enumerate(zip(encoders, tables, strict=True)):
            if vectors:
                encoder.set_input_embeddings(
                    _extended_table(table, [v[index] for v in vectors], next_id)
                )
        yield EmbeddingPlaceholders(named), AppliedNetworks(tuple(applied), skipped)
    finally:
        for encoder, table in zip(encoders, tables, strict=True):
            encoder.set_input_embeddings(table)


def _extended_table(
    table: torch.nn.Embedding, vectors: Sequence[torch.Tensor], rows: int
) -> torch.nn.Embedding:
    """A copy of ``table`` with ``vectors`` appended so that it has ``rows`` rows (zero rows
    pad an encoder whose vocabulary is shorter than the other's)."""
    weight = table.weight
    added = torch.cat([v.to(weight.device, weight.dtype) for v in vectors])
    padding = weight.new_zeros(rows - weight.shape[0] - added.shape[0], weight.shape[1])
    extended: torch.nn.Embedding = torch.nn.Embedding.from_pretrained(
        torch.cat([weight, padding, added]), freeze=True
    )
    return extended


def load_vae(path: Path, like: Any) -> Any:
    """A single-file VAE (original LDM or diffusers key layout) built with ``like``'s config,
    on ``like``'s device and dtype, its file read, not mapped (``inference.owned_weights``:
    one copied over as it loads fails the load, never the process). Raises ``RenderFailed``
    when it does not fit or was cut short, and ``RenderInputError`` when it is gone."""
    try:
        state = read_safetensors(path)
    except FileNotFoundError:
        raise RenderInputError(f"VAE {path.name} is {NO_LONGER_INSTALLED}") from None
    if any(key.startswith(_LDM_VAE_MARKERS) for key in state):
        state = convert_ldm_vae_checkpoint(state, like.config)
    vae = AutoencoderKL.from_config(like.config)
    try:
        missing, unexpected = vae.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensor shapes differ: a VAE for another model family
        raise RenderFailed(f"VAE {path.name} does not fit this model: {error}") from error
    if missing or unexpected:
        raise RenderFailed(
            f"VAE {path.name} does not fit this model: {len(missing)} weights missing, "
            f"{len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})"
        )
    vae.to(like.device)
    if vae.dtype != like.dtype:  # converting an float32 VAE to itself only earns a warning
        vae.to(like.dtype)
    return vae.eval()

"""The flow-matching model families, SD3/SD3.5 and Flux (dev, schnell): what each one is
(guidance, its T5 tokenizer; the samplers each takes: ``inference.family_rules``), how its
prompt is read, what it refuses, and how it loads (a diffusers folder, or a single file with
a shipped config and tokenizers).

The pass that renders them is ``inference.passes.flow``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch

from inference.family_rules import flow_prompt_refusal, flow_refusal
from inference.flow_detect import FAMILY_GUIDANCE, FLOW_FAMILY_NAMES, SD3_LABEL, Guidance
from inference.memory import gguf_quantization
from inference.not_installed import not_installed
from inference.prompts import PromptPlan
from inference.quantization import GGUF_FILE_TYPE, gguf_quantization_config
from inference.registry import GGUF_SUFFIX, ModelEntry
from inference.split_parts import models_root, part_components, part_files
from inference.types import RenderInputError

CONFIGS_DIR = Path(__file__).parent / "configs"
# Where an admin puts T5's tokenizer (``tokenizer.json``, as Hugging Face publishes it in
# ``google/t5-v1_1-xxl`` or any Flux/SD3 repository's ``tokenizer_2``/``tokenizer_3``) for
# single-file models: its vocabulary is not ours to ship.
T5_TOKENIZER_FOLDER = Path("text_encoder") / "t5-tokenizer"


@dataclass(frozen=True)
class FlowFamily:
    """One family's rules: how it is guided, its T5 length."""

    label: str
    max_sequence_length: int  # T5 tokens the model was trained with

    @property
    def guidance(self) -> Guidance:
        """How it takes its CFG, as the model lists say it (``FAMILY_GUIDANCE``)."""
        return FAMILY_GUIDANCE[self.label]

    def refusal(self, what: str) -> RenderInputError:
        return flow_refusal(self.label, what)


SD3 = FlowFamily(SD3_LABEL, 256)
FLUX_DEV = FlowFamily(FLOW_FAMILY_NAMES["flux-dev"], 512)
FLUX_SCHNELL = FlowFamily(FLOW_FAMILY_NAMES["flux-schnell"], 256)


def flow_family(pipeline: Any) -> FlowFamily | None:
    """The family of a loaded pipeline (None: an SD/SDXL UNet pipeline)."""
    name = type(pipeline).__name__
    if name.startswith("StableDiffusion3"):
        return SD3
    if name.startswith("Flux"):
        return FLUX_DEV if pipeline.transformer.config.guidance_embeds else FLUX_SCHNELL
    return None


# -- samplers -----------------------------------------------------------------------------


def make_flow_scheduler(name: str, config: Mapping[str, Any], schedule_type: str) -> Any:
    """A fresh scheduler for flow sampler ``name`` on the model's own shift settings."""
    if schedule_type not in ("Automatic", "Uniform"):
        raise RenderInputError(
            f"flow-matching samplers take no {schedule_type} schedule; choose Automatic"
        )
    if name == "Euler":
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config(dict(config))
    if name == "Heun":
        return diffusers.FlowMatchHeunDiscreteScheduler(
            num_train_timesteps=config["num_train_timesteps"], shift=config["shift"]
        )
    multistep = {
        "num_train_timesteps": config["num_train_timesteps"],
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": config["shift"],
        "use_dynamic_shifting": bool(config.get("use_dynamic_shifting")),
        "time_shift_type": "exponential",
    }
    if name == "DPM++ 2M":
        return diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, **multistep
        )
    return diffusers.UniPCMultistepScheduler(**multistep)


# -- prompts ------------------------------------------------------------------------------


def flow_prompt(plan: PromptPlan, family: FlowFamily) -> tuple[str, str, tuple[str, ...]]:
    """The plain positive and negative texts T5 and CLIP read, and what the member should
    know: T5 takes no ``(word:1.3)``, so weights are dropped with a warning; AND and prompt
    editing/alternation are refused (``flow_prompt_refusal``, which admission asks too)."""
    if (refusal := flow_prompt_refusal(family.label, plan)) is not None:
        raise refusal
    texts: list[str] = []
    weighted = False
    for part in (plan.subprompts[0], plan.negative):
        pieces = [(text, weight) for text, weight in part.schedule[0].pieces if text != "BREAK"]
        weighted |= any(weight != 1.0 for _, weight in pieces)
        texts.append("".join(text for text, _ in pieces))
    warnings: list[str] = []
    if weighted:
        warnings.append(
            f"{family.label} reads prompts with T5, which takes no weights: (word:1.3) and "
            "[word] emphasis were ignored"
        )
    if family.guidance != "cfg" and texts[1].strip():
        warnings.append(f"{family.label} takes no negative prompt; it was ignored")
    return texts[0], texts[1], tuple(warnings)


# -- loading ------------------------------------------------------------------------------


def load_flow_transformer(source: Path, config_dir: Path, dtype: torch.dtype) -> Any:
    """The denoiser of an SD3/Flux model, from a diffusers ``transformer/`` folder or from a
    single file (configured by ``config_dir/transformer``); a ``.gguf`` file's linear weights
    stay packed (inference.quantization)."""
    config = json.loads((config_dir / "transformer" / "config.json").read_text())
    model_class = getattr(diffusers, config["_class_name"])
    if source.is_dir():
        return model_class.from_pretrained(str(source), dtype=dtype, local_files_only=True)
    gguf = (
        {"quantization_config": gguf_quantization_config(dtype)}
        if source.suffix == GGUF_SUFFIX
        else {}
    )
    return model_class.from_single_file(
        str(source),
        config=str(config_dir),
        subfolder="transformer",
        dtype=dtype,
        local_files_only=True,
        **gguf,
    )


# The libraries a config folder's ``model_index.json`` may take components from, as in
# diffusers' own loader: importing any other module a downloaded file names would run it.
COMPONENT_LIBRARIES = ("diffusers", "transformers")


def _component_classes(index: Mapping[str, Any], config: Path) -> dict[str, Any]:
    """Each component's class as the config folder's index names it (None for the optional
    ones it leaves empty), taken from ``COMPONENT_LIBRARIES`` only: no module is imported
    for any other name the file gives."""
    import importlib

    classes: dict[str, Any] = {}
    for name, spec in index.items():
        if name.startswith("_"):
            continue
        library, class_name = spec
        if class_name is None:
            classes[name] = None
            continue
        found = None
        if library in COMPONENT_LIBRARIES and isinstance(class_name, str):
            found = getattr(importlib.import_module(library), class_name, None)
        if not (isinstance(found, type) and hasattr(found, "from_pretrained")):
            accepted = " or ".join(COMPONENT_LIBRARIES)
            raise RenderInputError(
                f"{config.name}/model_index.json names {library}.{class_name} for its "
                f"{name}: a component's class must come from {accepted}; ask an admin to "
                "fix the config folder"
            )
        classes[name] = found
    return classes


def _config_components(
    classes: Mapping[str, Any], config: Path, given: Mapping[str, Any]
) -> dict[str, Any]:
    """The pipeline's components not in ``given``, from the config folder (the scheduler, a
    sidecar's tokenizers); None for the optional ones the index leaves empty."""
    return {
        name: None
        if component is None
        else component.from_pretrained(str(config / name), local_files_only=True)
        for name, component in classes.items()
        if name not in given
    }


def load_flow_single_file(entry: ModelEntry, config: Path, dtype: torch.dtype) -> Any:
    """An SD3.5/Flux single file as a pipeline, configured by ``config`` (a shipped config
    folder, or the file's sidecar) and tokenized offline: CLIP from the shipped vocabulary,
    T5 from the admin's folder (a sidecar may carry its own tokenizers). The parts the file
    lacks (split releases: a transformer alone) come from the models folder's
    ``text_encoder/`` and ``vae/``."""
    from inference.tiny import load_clip_tokenizer

    index: dict[str, Any] = json.loads((config / "model_index.json").read_text())
    pipeline_class = getattr(diffusers, index["_class_name"])
    classes = _component_classes(index, config)  # before anything loads
    components = part_components(index)
    t5_tokenizer = components["T5"].replace("text_encoder", "tokenizer")
    clip = {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"}  # OpenCLIP pads with "!"
    tokenizers: dict[str, Any] = {
        name: load_clip_tokenizer(pad)
        for name, pad in clip.items()
        if name != t5_tokenizer and not (config / name).is_dir()
    }
    if not (config / t5_tokenizer).is_dir():
        tokenizers[t5_tokenizer] = load_t5_tokenizer(models_root(entry.path), entry.path.name)
    # Missing parts are refused before the big transformer loads.
    parts = {
        component: _load_part(part, path, config, component, dtype)
        for component, (part, path) in part_files(entry.path, config).items()
    }
    given = {"transformer": load_flow_transformer(entry.path, config, dtype), **tokenizers, **parts}
    if set(components.values()) <= set(parts):
        # A transformer alone (split files, GGUF): nothing more to read from it.
        pipeline = pipeline_class(**given, **_config_components(classes, config, given))
    else:
        pipeline = pipeline_class.from_single_file(
            str(entry.path), config=str(config), local_files_only=True, dtype=dtype, **given
        )
    # The files store T5's token embedding once (shared.weight); diffusers leaves the
    # encoder's tied copy unloaded, and the model in training mode (its dropout on).
    t5 = getattr(pipeline, components["T5"])
    if t5.encoder.embed_tokens.weight.is_meta:
        t5.encoder.embed_tokens = t5.shared
    t5.eval()
    return pipeline


# The encoder's copy of T5's embedding: tied to ``shared`` as the model loads.
_T5_TIED = ("encoder.embed_tokens.weight",)


def _load_part(part: str, path: Path, config: Path, component: str, dtype: torch.dtype) -> Any:
    """One part from its own file: the VAE through diffusers' single-file loader, a text
    encoder built from its config and given the file's tensors. Mapped (a T5 file is some
    9 GB): the file is one of the model's (``model_cache.stamped_files``), which its load
    lets settle first (``file_versions.being_written``)."""
    import transformers
    from safetensors.torch import load_file

    if part == "VAE":
        return diffusers.AutoencoderKL.from_single_file(
            str(path), config=str(config), subfolder="vae", dtype=dtype, local_files_only=True
        )
    settings = json.loads((config / component / "config.json").read_text())
    model_class = getattr(transformers, settings["architectures"][0])
    model_config = transformers.AutoConfig.from_pretrained(
        str(config / component), local_files_only=True
    )
    if path.suffix == GGUF_SUFFIX:
        return _load_gguf_t5(model_class, model_config, path, dtype)
    model = model_class(model_config)
    state = load_file(str(path))
    if part == "T5":
        state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
    elif not hasattr(model, "text_model"):
        # transformers 5.6 flattened CLIPTextModel (Flux's CLIP-L); the files keep the
        # ``text_model.`` names, as CLIPTextModelWithProjection (SD3's) still does.
        state = {name.removeprefix("text_model."): tensor for name, tensor in state.items()}
    elif "text_projection.weight" in model.state_dict():
        # Files of CLIP-L carry no projection; SD3 reads CLIP-L with an identity, as diffusers.
        state.setdefault("text_projection.weight", torch.eye(settings["hidden_size"]))
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise RenderInputError(
            f"{path.name} does not hold the {part} this model needs (missing {missing[0]})"
        )
    return model.to(dtype).eval()


def _load_gguf_t5(model_class: Any, model_config: Any, path: Path, dtype: torch.dtype) -> Any:
    """T5 from a GGUF file through transformers' GGUF reader, which unpacks every weight as
    it loads: it runs at ``dtype`` (Q8_0 T5-XXL: 9.5 GB in bfloat16), only read smaller.
    The config is the shipped one: transformers reads T5 v1.1's gated GELU from a GGUF file
    as gated ReLU, which changes every output."""
    model, loading = model_class.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        config=model_config,
        dtype=dtype,
        local_files_only=True,
        output_loading_info=True,
    )
    missing = [name for name in loading["missing_keys"] if name not in _T5_TIED]
    if missing:
        raise RenderInputError(
            f"{path.name} does not hold the T5 this model needs (missing {missing[0]})"
        )
    setattr(model, GGUF_FILE_TYPE, gguf_quantization(ModelEntry(path.stem, path, "gguf")))
    return model.eval()


def load_t5_tokenizer(models_dir: Path, for_file: str) -> Any:
    """T5's tokenizer from ``<models>/text_encoder/t5-tokenizer/`` (its ``tokenizer.json``);
    a clear sentence when the admin has not put it there."""
    from transformers import T5Tokenizer

    folder = models_dir / T5_TOKENIZER_FOLDER
    if not (folder / "tokenizer.json").is_file():
        raise not_installed(
            f"the T5 tokenizer {for_file} needs",
            f"{for_file} needs T5's tokenizer, which Easel cannot download: put its "
            f"tokenizer.json (from any Flux or SD3 diffusers repository) in {folder}/",
        )
    return T5Tokenizer.from_pretrained(str(folder), local_files_only=True)

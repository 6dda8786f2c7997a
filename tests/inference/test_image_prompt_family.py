"""An image prompt is checked against the model it will render with before it is queued,
from file headers alone (``check_image_prompt_fits``): the render's own sentences, no
weights read."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import save_file

import inference.image_prompts as image_prompts
from inference.image_prompts import ImagePrompt, adapter_text_width, check_image_prompt_fits
from inference.ldm_export import UNET_PREFIX
from inference.registry import ModelRegistry
from inference.types import RenderInputError

CROSS_ATTENTION = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SD15_MARKER = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
SDXL_MARKER = "conditioner.embedders.1.model.ln_final.weight"


def _adapter(path: Path, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"ip_adapter.1.to_k_ip.weight": torch.zeros(4, width)}, str(path))
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """An SD1.5 and an SDXL checkpoint (headers that say so), a Flux dev transformer, and
    one SD1.5 adapter with its image encoder."""
    save_file(
        {SD15_MARKER: torch.zeros(1), UNET_PREFIX + CROSS_ATTENTION: torch.zeros(4, 768)},
        str(tmp_path / "sd15.safetensors"),
    )
    save_file(
        {SDXL_MARKER: torch.zeros(1), UNET_PREFIX + CROSS_ATTENTION: torch.zeros(4, 2048)},
        str(tmp_path / "xl.safetensors"),
    )
    flux = ("double_blocks.0.img_attn.qkv.weight", "guidance_in.in_layer.weight")
    save_file({name: torch.zeros(1) for name in flux}, str(tmp_path / "flux.safetensors"))
    _adapter(tmp_path / "ipadapter" / "sd15-adapter.safetensors", 768)
    encoder = tmp_path / "ipadapter" / "image_encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({}))
    save_file({"w": torch.zeros(1)}, str(encoder / "model.safetensors"))  # only its config: a copy
    return tmp_path


def _refusal(models: Path, prompt: ImagePrompt, model: str | None, default: str | None) -> str:
    with pytest.raises(RenderInputError) as refused:
        check_image_prompt_fits(prompt, ModelRegistry(models), model, default)
    return str(refused.value)


def test_an_image_prompt_that_fits_the_model_passes(models: Path) -> None:
    registry = ModelRegistry(models)
    check_image_prompt_fits(ImagePrompt(("a.png",)), registry, "sd15", None)
    check_image_prompt_fits(ImagePrompt(("a.png",)), registry, None, "sd15")  # the default
    check_image_prompt_fits(None, registry, "flux", None)  # no image prompt: nothing to check
    # An unknown model is the request's own checks' to refuse (which name only the models
    # the server allows), not listed here.
    check_image_prompt_fits(ImagePrompt(("a.png",)), registry, "nonesuch", None)


def test_a_model_of_another_family_is_refused_in_the_render_s_words(models: Path) -> None:
    assert _refusal(models, ImagePrompt(("a.png",)), "xl", None) == (
        "no installed IP-Adapter fits this checkpoint: put an IP-Adapter for the SDXL family "
        "in EASEL_MODELS_DIR/ipadapter/"
    )
    # The default model counts when the member names none.
    assert "for the SDXL family" in _refusal(models, ImagePrompt(("a.png",)), None, "xl")
    named = ImagePrompt(("a.png",), model="sd15-adapter")
    assert _refusal(models, named, "xl", None) == (
        "the IP-Adapter sd15-adapter is for the SD1.x family and this checkpoint is SDXL: "
        "pick an adapter of the checkpoint's family"
    )
    assert _refusal(models, ImagePrompt(("a.png",)), "flux", None) == (
        "IP-Adapter (--sref, /blend) does not work with Flux dev models here"
    )


def test_an_adapter_header_is_read_once_per_file_version(models: Path) -> None:
    path = models / "ipadapter" / "sd15-adapter.safetensors"
    reads = mock.Mock(wraps=image_prompts.safetensors_header)
    with mock.patch.object(image_prompts, "safetensors_header", reads):
        assert [adapter_text_width(path) for _ in range(3)] == [768] * 3
        _adapter(path, 2048)  # replaced: another size, so another version
        assert adapter_text_width(path) == 2048
    assert reads.call_count == 2

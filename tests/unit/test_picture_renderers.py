"""cogs.common.picture_renderers_in: what a picture's own settings may name where a button or
an edit renders it again, the stand-in for its model among them, from one model listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import inference.model_list
from bot.edits import picture_settings
from bot.services import Services
from bot.settings import load_settings
from cogs.common import picture_renderers_in
from db.database import connect
from inference.metadata import FAMILY_MARKERS
from inference.model_list import ListedModel
from inference.registry import ModelRegistry

# A picture made with a model not installed here, with Forge's both CFG values.
GONE_MODEL_S_TEXT = (
    "a fox\nSteps: 4, Sampler: Euler, CFG scale: 5, Distilled CFG Scale: 3.5, Seed: 7, "
    "Size: 64x64, Model: gone"
)


async def test_the_operator_s_flux_default_stands_in_and_reads_the_distilled_cfg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``anime`` (SD 1.5) sorts first, but the operator's default is ``flux``: that stands in
    for the picture's model, so its CFG is the distilled 3.5, not the true 5. The folders are
    listed once for the flow and the distilled lists."""
    models = tmp_path / "models"
    models.mkdir()
    sd15 = dict(FAMILY_MARKERS)["sd15"]
    save_file({sd15: torch.zeros(1)}, str(models / "anime.safetensors"))
    flux_dev = {
        "double_blocks.0.img_attn.qkv.weight": torch.zeros(1),
        "guidance_in.in_layer.weight": torch.zeros(1),
    }
    save_file(flux_dev, str(models / "flux.safetensors"))
    settings = load_settings(env_file=None).model_copy(
        update={"models_dir": models, "data_dir": tmp_path / "data", "default_model": "flux"}
    )
    listings: list[ModelRegistry] = []
    listing = inference.model_list.installed_models

    def counted(registry: ModelRegistry) -> dict[str, ListedModel]:
        listings.append(registry)
        return listing(registry)

    monkeypatch.setattr(inference.model_list, "installed_models", counted)
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        renderers = await picture_renderers_in(Services.build(conn, settings), None)
    finally:
        await conn.close()
    assert len(listings) == 1
    assert renderers.default_model == "flux"
    assert (renderers.flow_models, renderers.distilled_models) == (["flux"], ["flux"])
    request = picture_settings(GONE_MODEL_S_TEXT, renderers)
    assert request.model is None and request.cfg_scale == 3.5

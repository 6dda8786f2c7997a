"""Add-on files still being copied (or cut short) are left out of the registry's lists and
lookups until they are whole, the operator told once: LoRAs, embeddings, VAEs, upscalers and
face restorers (``.safetensors``, and ``.pth`` where pickles are allowed), ControlNets (a file,
or a diffusers folder's weights), IP-Adapters (with their image encoder's weights), and GGUF
checkpoints (a ``.gguf`` file alone, or in a diffusers folder's ``unet/``). Each used to be
offered, and every job that picked it failed or ran without it. A split release's T5 or CLIP
file still being copied is passed over for a whole one, else the transformer needing it is left
out. A diffusers folder's weights are those its load reads: ``.bin`` pickles where it has no
safetensors, every shard an index names, and a model's folder holding none is not whole yet."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference import metadata as metadata_module
from inference import registry as registry_module
from inference import split_parts
from inference.checkpoints import split_part_files
from inference.control_units import ControlUnit, check_control_models, controlnet_files
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.image_prompts import ImagePrompt, adapter_files, check_image_prompt_models
from inference.memory import gguf_quantization
from inference.model_list import installed_models
from inference.registry import LISTING_MAX_AGE_NS, SCAN_MAX_AGE_NS, ModelEntry, ModelRegistry
from inference.types import RenderInputError
from tests.support.gguf_files import write_gguf

Lister = Callable[[ModelRegistry], dict[str, Path]]
# Each kind's folder and how the registry lists it.
_KINDS: dict[str, tuple[str, Lister]] = {
    "lora": ("lora", lambda registry: registry.network_files("lora")),
    "embedding": ("embeddings", lambda registry: registry.network_files("embedding")),
    "vae": ("vae", lambda registry: registry.network_files("vae")),
    "upscaler": ("upscalers", ModelRegistry.upscaler_files),
    "face restorer": ("face_restore", ModelRegistry.face_restorer_files),
}


def weights(path: Path, numel: int = 256) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(numel)}, str(path))
    return path


def cut_in_half(path: Path) -> bytes:
    """Leaves the first half of ``path``, as a copy still running does; returns the whole."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return whole


def not_offered(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [message for message in caplog.messages if "is not offered" in message]


@pytest.mark.parametrize("kind", list(_KINDS))
def test_a_half_copied_add_on_is_left_out_told_once_and_listed_once_whole(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder, listed = _KINDS[kind]
    weights(tmp_path / folder / "ready.safetensors")
    copying = weights(tmp_path / folder / "sub" / "copying.safetensors")
    whole = cut_in_half(copying)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.INFO, logger="inference.registry"):
        for _ in range(3):
            assert listed(registry) == {"ready": tmp_path / folder / "ready.safetensors"}
        assert not_offered(caplog) == [
            f"{kind} copying at {copying} is not offered: copying.safetensors is incomplete "
            f"({len(whole) // 2} of {len(whole)} bytes): still copying?"
        ]
        copying.write_bytes(whole)  # the copy ends: offered at the next lookup
        assert sorted(listed(registry)) == ["copying", "ready"]
    assert f"{kind} copying at {copying}: copying.safetensors is whole now" in caplog.messages
    assert len(not_offered(caplog)) == 1


def test_a_name_typed_while_its_file_is_copied_is_not_installed(tmp_path: Path) -> None:
    """The lookups take the lists: a VAE or upscaler named is refused as not installed."""
    cut_in_half(weights(tmp_path / "upscalers" / "x4.safetensors"))
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RenderInputError, match="unknown upscaler 'x4': it is not installed"):
        registry.resolve_upscaler("x4")
    assert registry.resolve_upscaler(None) == ("Lanczos", None)  # the default skips it too
    assert registry.upscaler_names() == ["Lanczos"]


def test_a_whole_file_of_another_folder_stands_in_for_one_still_copying(tmp_path: Path) -> None:
    cut_in_half(weights(tmp_path / "lora" / "style.safetensors"))
    fallback = weights(tmp_path / "Lora" / "style.safetensors")
    assert ModelRegistry(tmp_path).network_files("lora") == {"style": fallback}


def test_two_registries_of_a_process_tell_the_operator_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot and each device's engine keep a registry, and all list the LoRAs."""
    cut_in_half(weights(tmp_path / "lora" / "half.safetensors"))
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for registry in (ModelRegistry(tmp_path), ModelRegistry(tmp_path)):
            assert registry.network_files("lora") == {}
    assert len(not_offered(caplog)) == 1


def test_a_file_found_whole_is_checked_again_a_second_later(tmp_path: Path) -> None:
    """A lookup within ``SCAN_MAX_AGE_NS`` of finding a file whole stats no file (admissions
    list the embeddings); a file copied over it in place is left out after that."""
    now = [0]
    registry = ModelRegistry(tmp_path, clock=lambda: now[0])
    lora = weights(tmp_path / "lora" / "style.safetensors")
    assert list(registry.network_files("lora")) == ["style"]
    cut_in_half(lora)
    now[0] += SCAN_MAX_AGE_NS - 1
    assert list(registry.network_files("lora")) == ["style"]
    now[0] += 1
    assert registry.network_files("lora") == {}


def torch_pickle(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"w": torch.zeros(256)}, path)
    return path


def test_a_pickled_upscaler_cut_short_is_left_out_where_pickles_are_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """torch saves a zip archive, whose directory is at its end: a cut one has none. An empty
    file (a browser's placeholder) is left out too; torch's older format, which says nothing
    of its length, is taken as whole."""
    copying = torch_pickle(tmp_path / "ESRGAN" / "4x-copying.pth")
    whole = cut_in_half(copying)
    (tmp_path / "ESRGAN" / "4x-empty.pth").write_bytes(b"")
    legacy = tmp_path / "ESRGAN" / "4x-legacy.pth"
    torch.save({"w": torch.zeros(4)}, legacy, _use_new_zipfile_serialization=False)
    registry = ModelRegistry(tmp_path, allow_pickle=True)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        assert list(registry.upscaler_files()) == ["4x-legacy"]
    assert sorted(not_offered(caplog)) == [
        f"upscaler 4x-copying at {copying} is not offered: 4x-copying.pth is not a whole zip "
        f"archive ({len(whole) // 2} bytes; File is not a zip file): still copying?",
        f"upscaler 4x-empty at {tmp_path / 'ESRGAN' / '4x-empty.pth'} is not offered: "
        "4x-empty.pth is empty: still copying?",
    ]
    copying.write_bytes(whole)
    assert sorted(registry.upscaler_files()) == ["4x-copying", "4x-legacy"]


def gguf_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_gguf({"a.weight": torch.randn(64, 64), "b": torch.randn(10)}, path)


def test_a_half_copied_gguf_checkpoint_is_left_out_and_the_model_list_still_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its header read for the list's family and quantization raised, so /models and every
    admission (which reads the families) failed for everyone while it was copied."""
    weights(tmp_path / "ready.safetensors")
    copying = gguf_checkpoint(tmp_path / "unet" / "flux-Q8_0.gguf")
    whole = cut_in_half(copying)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for _ in range(2):
            assert registry.names() == ["ready"]
            assert list(installed_models(registry)) == ["ready"]
    [told] = not_offered(caplog)
    assert told.startswith(
        f"model flux-Q8_0 is not offered: flux-Q8_0.gguf is not a whole GGUF file "
        f"({len(whole) // 2} bytes; "
    )
    assert told.endswith("): still copying?")
    with pytest.raises(RenderInputError, match="model 'flux-Q8_0' cannot be loaded now: flux"):
        registry.resolve("flux-Q8_0")
    copying.write_bytes(whole)
    assert registry.names() == ["flux-Q8_0", "ready"]


def test_a_gguf_cut_short_after_the_scan_lists_no_quantization(tmp_path: Path) -> None:
    """The scan answers for a second: a file copied over a listed one in that time is shown
    without its quantization, not an internal error of /models."""
    gguf = gguf_checkpoint(tmp_path / "unet" / "flux-Q8_0.gguf")
    entry = ModelEntry("flux-Q8_0", gguf, "gguf")
    assert gguf_quantization(entry) == "Q8_0"
    whole = gguf.read_bytes()
    # Cut anywhere in its header (where the reader also raised IndexError) and in its data.
    for length in [*range(1, 600), *range(600, len(whole), 97)]:
        gguf.write_bytes(whole[:length])
        assert gguf_quantization(entry) is None, length


def test_a_diffusers_folder_whose_gguf_unet_is_cut_is_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "quantized"
    folder.mkdir()
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DCondition"]}
    (folder / "model_index.json").write_text(json.dumps(index))
    cut_in_half(gguf_checkpoint(folder / "unet" / "model-Q8_0.gguf"))
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable()["quantized"].startswith("unet/model-Q8_0.gguf is not a whole GGUF")


def test_a_pickle_of_a_zip_version_python_does_not_know_is_offered(tmp_path: Path) -> None:
    """zipfile refuses a directory whose "version needed" is above 6.3 (NotImplementedError);
    torch.load does not look at it. The check says whole, and lists never raise."""
    pickled = torch_pickle(tmp_path / "old.ckpt")
    data = bytearray(pickled.read_bytes())
    directory = data.find(b"PK\x01\x02")
    data[directory + 6 : directory + 8] = (99).to_bytes(2, "little")  # version 9.9
    pickled.write_bytes(bytes(data))
    (tmp_path / "upscalers").mkdir()
    (tmp_path / "upscalers" / "x4.pth").write_bytes(bytes(data))
    registry = ModelRegistry(tmp_path, allow_pickle=True)
    assert registry.names() == ["old"]
    assert list(registry.upscaler_files()) == ["x4"]


def test_a_pickle_of_a_few_bytes_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "upscalers").mkdir()
    (tmp_path / "upscalers" / "x4.pth").write_bytes(b"PK\x03")
    registry = ModelRegistry(tmp_path, allow_pickle=True)
    assert registry.upscaler_files() == {}


def test_a_half_pickle_where_pickles_are_not_allowed_is_refused_as_a_pickle_untold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It is never offered there: the member is told why, the operator not told of a copy."""
    cut_in_half(torch_pickle(tmp_path / "upscalers" / "x4.pth"))
    with (
        caplog.at_level(logging.WARNING, logger="inference.registry"),
        pytest.raises(RenderInputError, match="'x4' is a pickle file"),
    ):
        ModelRegistry(tmp_path).resolve_upscaler("x4")
    assert not_offered(caplog) == []


def test_a_half_copy_removed_and_copied_again_is_told_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What was kept of a file no longer listed is forgotten (the checks' caches stay as
    small as the folders)."""
    registry = ModelRegistry(tmp_path)
    half = tmp_path / "lora" / "half.safetensors"
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for _ in range(2):
            cut_in_half(weights(half))
            assert registry.network_files("lora") == {}
            assert registry.network_files("lora") == {}
            half.unlink()
            assert registry.network_files("lora") == {}
    assert len(not_offered(caplog)) == 2


def test_many_add_ons_are_each_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of more LoRAs than a least-recently-used cache held (1,024) used to reread
    every header at every pass."""
    read: list[Path] = []
    real = metadata_module._sized_header

    def counted(path: Path) -> tuple[int, dict[str, object]]:
        read.append(path)
        return real(path)

    monkeypatch.setattr(metadata_module, "_sized_header", counted)
    one = weights(tmp_path / "lora" / "l0.safetensors", numel=1).read_bytes()
    for number in range(1, 1100):
        (tmp_path / "lora" / f"l{number}.safetensors").write_bytes(one)
    now = [0]
    registry = ModelRegistry(tmp_path, clock=lambda: now[0])
    for _ in range(3):
        assert len(registry.network_files("lora")) == 1100
        now[0] += SCAN_MAX_AGE_NS
    assert len(read) == 1100


def test_a_file_long_unchanged_is_trusted_longer(tmp_path: Path) -> None:
    """Found whole after going unchanged for ``LISTING_MAX_AGE_NS``, a file is not statted
    again for that long (a folder may hold thousands); a file just written, after a second."""
    now = [0]
    registry = ModelRegistry(tmp_path, clock=lambda: now[0])
    old = weights(tmp_path / "lora" / "old.safetensors")
    long_ago = time.time_ns() - LISTING_MAX_AGE_NS - 1_000_000_000
    os.utime(old, ns=(long_ago, long_ago))
    new = weights(tmp_path / "lora" / "new.safetensors")
    assert sorted(registry.network_files("lora")) == ["new", "old"]
    cut_in_half(old)
    cut_in_half(new)
    now[0] += SCAN_MAX_AGE_NS
    assert list(registry.network_files("lora")) == ["old"]
    now[0] += LISTING_MAX_AGE_NS - SCAN_MAX_AGE_NS
    assert registry.network_files("lora") == {}


def incomplete(path: Path, whole: bytes) -> str:
    """What the check says of ``path`` cut in half (``cut_in_half``) from ``whole``."""
    return f"{path.name} is incomplete ({len(whole) // 2} of {len(whole)} bytes): still copying?"


def test_a_half_copied_controlnet_is_left_out_and_a_whole_one_stands_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file, or a diffusers folder's weights: a unit naming it is refused as not installed
    (the bot refuses it before queueing: its admission lists the ControlNets)."""
    fallback = weights(tmp_path / "controlnet" / "canny.safetensors")  # searched second
    copying = weights(tmp_path / "ControlNet" / "canny.safetensors")
    whole_canny = cut_in_half(copying)
    folder = tmp_path / "ControlNet" / "depth-sd15"
    (folder / "config.json").parent.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    folder_file = weights(folder / "diffusion_pytorch_model.safetensors")
    whole_depth = cut_in_half(folder_file)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.INFO, logger="inference.registry"):
        for _ in range(2):
            assert controlnet_files(registry) == {"canny": fallback}
        depth = ControlUnit("depth", "map.png", model="depth-sd15")
        with pytest.raises(RenderInputError, match=r"^unknown ControlNet model 'depth-sd15': it"):
            check_control_models([depth], registry)
        assert sorted(not_offered(caplog)) == [
            f"ControlNet canny at {copying} is not offered: {incomplete(copying, whole_canny)}",
            f"ControlNet depth-sd15 at {folder} is not offered: "
            f"depth-sd15/{incomplete(folder_file, whole_depth)}",
        ]
        folder_file.write_bytes(whole_depth)
        copying.write_bytes(whole_canny)
        assert controlnet_files(registry) == {"canny": copying, "depth-sd15": folder}
        check_control_models([depth], registry)
    assert f"ControlNet canny at {copying}: canny.safetensors is whole now" in caplog.messages


@pytest.mark.parametrize("named", [None, "depth"], ids=["unnamed", "named"])
def test_with_no_controlnet_installed_a_unit_is_refused_as_no_controlnet_named_or_not(
    tmp_path: Path, named: str | None
) -> None:
    """A member is told no ControlNet is installed, whether the unit names one or not (the
    command line names the ``--control-model`` first: ``tests/unit/test_cli_usage_errors.py``)."""
    with pytest.raises(
        RenderInputError, match=r"^ControlNet is not installed on this server: ask an admin$"
    ):
        check_control_models([ControlUnit("canny", "map.png", named)], ModelRegistry(tmp_path))


def test_only_half_copied_controlnets_are_no_controlnet(tmp_path: Path) -> None:
    cut_in_half(weights(tmp_path / "ControlNet" / "canny.safetensors"))
    with pytest.raises(
        RenderInputError, match=r"^ControlNet is not installed on this server: ask an admin$"
    ):
        check_control_models([ControlUnit("canny", "map.png")], ModelRegistry(tmp_path))


def test_an_ip_adapter_is_offered_once_its_file_and_image_encoder_are_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0]
    registry = ModelRegistry(tmp_path, clock=lambda: now[0])
    adapter = weights(tmp_path / "ipadapter" / "style.safetensors")
    encoder = tmp_path / "ipadapter" / "image_encoder"
    encoder_file = weights(encoder / "model.safetensors")
    (encoder / "config.json").write_text("{}")
    whole_encoder = cut_in_half(encoder_file)
    named = ImagePrompt(("a.png",), model="style")
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for _ in range(2):
            assert adapter_files(registry) == {}
            with pytest.raises(
                RenderInputError,
                match=r"^IP-Adapter is not installed on this server: ask an admin$",
            ):
                check_image_prompt_models(named, registry)
    assert not_offered(caplog) == [
        f"IP-Adapter style at {adapter} is not offered: "
        f"image_encoder/{incomplete(encoder_file, whole_encoder)}"
    ]
    encoder_file.write_bytes(whole_encoder)
    assert adapter_files(registry) == {"style": adapter}
    check_image_prompt_models(named, registry)
    # The adapter itself copied over again, beside another one: the name is not installed.
    whole_adapter = cut_in_half(adapter)
    other = weights(tmp_path / "ipadapter" / "other.safetensors")
    now[0] += SCAN_MAX_AGE_NS
    assert adapter_files(registry) == {"other": other}
    with pytest.raises(RenderInputError, match=r"^unknown IP-Adapter 'style'; available: other$"):
        check_image_prompt_models(named, registry)
    adapter.write_bytes(whole_adapter)
    assert sorted(adapter_files(registry)) == ["other", "style"]


def cut_in_its_data(path: Path) -> bytes:
    """Leaves ``path``'s header and one byte of its data (a copy under way); returns it whole."""
    whole = path.read_bytes()
    header = int.from_bytes(whole[:8], "little")
    path.write_bytes(whole[: 8 + header + 1])
    return whole


def test_a_split_release_whose_t5_is_still_being_copied_is_left_out_until_one_is_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its header fits, so its load picked it and failed reading its weights (refunded): the
    transformer needing it is not offered, told once, until a whole T5 that fits is there.
    Its load (after a scan up to a second old offered it) still says why; a GGUF T5's header
    does not read until it is whole, and it was "no T5 file that fits"."""
    checkpoint = write_tiny_flow_checkpoint(
        tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path
    )
    parts = tmp_path / "text_encoder"
    t5 = parts / "tiny-t5xxl.safetensors"
    whole = cut_in_its_data(t5)
    size = t5.stat().st_size
    cut = f"tiny-t5xxl.safetensors is incomplete ({size} of {len(whole)} bytes): still copying?"
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for _ in range(2):
            assert registry.names() == []
            assert registry.unusable() == {"split": f"text_encoder/{cut}"}
    assert not_offered(caplog) == [f"model split is not offered: text_encoder/{cut}"]
    with pytest.raises(RenderInputError, match=r"^model 'split' cannot be loaded now: text_enc"):
        registry.resolve("split")
    entry = ModelEntry("split", checkpoint, "safetensors")
    refused = "^split.safetensors finds no whole T5 file: "
    with pytest.raises(RenderInputError, match=refused + re.escape(cut)):
        split_part_files(entry)
    # A whole one that fits (another name, a later copy) is read meanwhile.
    (parts / "z-t5xxl.safetensors").write_bytes(whole)
    assert registry.names() == ["split"]
    assert split_part_files(entry)["text_encoder_3"] == ("T5", parts / "z-t5xxl.safetensors")
    t5.write_bytes(whole)
    assert split_part_files(entry)["text_encoder_3"] == ("T5", t5)
    t5.unlink()
    (parts / "z-t5xxl.safetensors").unlink()
    cut_in_half(gguf_checkpoint(parts / "t5-Q8_0.gguf"))
    assert registry.names() == []
    assert registry.unusable()["split"].startswith("text_encoder/t5-Q8_0.gguf is not a whole GGUF")
    with pytest.raises(RenderInputError, match=refused + "t5-Q8_0.gguf is not a whole GGUF file"):
        split_part_files(entry)


def test_a_split_release_missing_a_part_is_offered_and_its_load_names_the_folder(
    tmp_path: Path,
) -> None:
    """No part file at all is no copy under way: listed, and its load says what to put where
    (``easel doctor`` too), as before."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    (tmp_path / "text_encoder" / "tiny-t5xxl.safetensors").unlink()
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["split"]
    with pytest.raises(RenderInputError, match=r"^the T5 split.safetensors needs is not installed"):
        split_part_files(registry.resolve("split"))


def test_a_diffusers_folder_s_half_text_encoder_shard_is_left_out(tmp_path: Path) -> None:
    """A component's every file is checked (a sharded T5: ``model-00002-of-00002``)."""
    folder = tmp_path / "split-xl"
    folder.mkdir()
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    weights(folder / "unet" / "diffusion_pytorch_model.safetensors")
    weights(folder / "text_encoder_2" / "model-00001-of-00002.safetensors")
    shard = weights(folder / "text_encoder_2" / "model-00002-of-00002.safetensors")
    whole = cut_in_half(shard)
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable() == {"split-xl": f"text_encoder_2/{incomplete(shard, whole)}"}


def test_a_check_stats_its_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's ``stat`` says when it changed and keys what is read of it: one serves both."""
    lora = weights(tmp_path / "lora" / "style.safetensors")
    statted: list[Path] = []
    stat = Path.stat

    def counted(path: Path, **kwargs: bool) -> os.stat_result:
        if path == lora:
            statted.append(path)
        return stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", counted)
    assert list(ModelRegistry(tmp_path).network_files("lora")) == ["style"]
    assert statted == [lora]


def diffusers_folder(folder: Path, **components: str) -> Path:
    """A diffusers folder whose ``model_index.json`` names ``components`` (folder: class)."""
    folder.mkdir(parents=True)
    index: dict[str, object] = {"_class_name": "StableDiffusionPipeline"}
    library = {"tokenizer": "transformers", "text_encoder": "transformers"}
    index |= {name: [library.get(name, "diffusers"), kind] for name, kind in components.items()}
    (folder / "model_index.json").write_text(json.dumps(index))
    for name in components:
        (folder / name).mkdir()
    return folder


def test_a_diffusers_folder_s_half_bin_weights_are_left_out(tmp_path: Path) -> None:
    """diffusers reads a component's pickled ``.bin`` weights where it has no safetensors:
    they were offered whole or not. A tokenizer or scheduler holds no weights, and needs none."""
    folder = diffusers_folder(
        tmp_path / "old-sd",
        unet="UNet2DConditionModel",
        tokenizer="CLIPTokenizer",
        scheduler="PNDMScheduler",
    )
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    (folder / "unet" / "config.json").write_text("{}")
    unet = torch_pickle(folder / "unet" / "diffusion_pytorch_model.bin")
    whole = cut_in_half(unet)
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable() == {
        "old-sd": f"unet/diffusion_pytorch_model.bin is not a whole zip archive "
        f"({len(whole) // 2} bytes; File is not a zip file): still copying?"
    }
    unet.write_bytes(whole)
    assert registry.names() == ["old-sd"]


def test_a_model_s_folder_with_its_config_and_no_weights_yet_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ControlNet's folder (or a diffusers folder's ``unet/``) whose ``config.json`` came
    first, its weights still to come: every job naming it failed at load."""
    controlnet = tmp_path / "ControlNet" / "depth-sd15"
    controlnet.mkdir(parents=True)
    (controlnet / "config.json").write_text("{}")
    folder = diffusers_folder(tmp_path / "sd", unet="UNet2DConditionModel")
    (folder / "unet" / "config.json").write_text("{}")
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        for _ in range(2):
            assert controlnet_files(registry) == {}
            assert registry.names() == []
    no_weights = "holds no weights (.safetensors, .gguf or .bin): still copying?"
    assert sorted(not_offered(caplog)) == [
        f"ControlNet depth-sd15 at {controlnet} is not offered: depth-sd15 {no_weights}",
        f"model sd is not offered: sd/unet {no_weights}",
    ]
    weights(controlnet / "diffusion_pytorch_model.safetensors")
    weights(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert controlnet_files(registry) == {"depth-sd15": controlnet}
    assert registry.names() == ["sd"]


def test_sharded_weights_are_whole_once_every_shard_their_index_names_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sharded transformer: its index came first (or is itself cut short), a shard it names
    is not there yet or still being copied."""
    folder = diffusers_folder(tmp_path / "flux", transformer="FluxTransformer2DModel")
    part = folder / "transformer"
    shards = [f"diffusion_pytorch_model-0000{n}-of-00002.safetensors" for n in (1, 2)]
    index = part / "diffusion_pytorch_model.safetensors.index.json"
    index_text = json.dumps({"weight_map": {"a": shards[0], "b": shards[1], "c": shards[1]}})
    index.write_text(index_text[:20])
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="inference.registry"):
        assert registry.names() == []
        assert registry.unusable() == {
            "flux": "transformer/diffusion_pytorch_model.safetensors.index.json is not a "
            "whole weights index (20 bytes): still copying?"
        }
        index.write_text(index_text)
        weights(part / shards[0])
        assert registry.names() == []
        assert registry.unusable() == {
            "flux": f"transformer/{shards[1]} cannot be read: No such file or directory"
        }
        whole = cut_in_half(weights(part / shards[1]))
        assert registry.unusable() == {"flux": f"transformer/{incomplete(part / shards[1], whole)}"}
    assert len(not_offered(caplog)) == 2  # once per file: the index, the second shard
    (part / shards[1]).write_bytes(whole)
    assert registry.names() == ["flux"]


def test_a_split_release_s_scan_stats_each_of_its_files_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing is on the autocomplete's path: each part file is stat'ed once a scan,
    though ``text_encoder/`` is searched for each of three encoders."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["split"]  # the headers read, once per file version
    statted: list[Path] = []
    stat = Path.stat

    def counted(path: Path, **kwargs: bool) -> os.stat_result:
        if path.parent.name in ("text_encoder", "vae") and path.suffix == ".safetensors":
            statted.append(path)
        return stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", counted)
    assert ModelRegistry(tmp_path).names() == ["split"]
    parts = [
        *(tmp_path / "text_encoder").glob("*.safetensors"),
        tmp_path / "vae" / "tiny-sd3-ae.safetensors",
    ]
    assert len(parts) == 4 and sorted(statted) == sorted(parts)


def sharded_unet(tmp_path: Path, index_text: str) -> Path:
    """A diffusers folder "m" whose UNet has ``index_text`` as its weights index."""
    folder = diffusers_folder(tmp_path / "m", unet="UNet2DConditionModel")
    index = folder / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(index_text)
    return index


@pytest.mark.parametrize("shard", ["..", ".", "", "/etc/passwd", "../../m/x.safetensors", "sub/x"])
def test_an_index_naming_files_outside_its_folder_is_no_index(tmp_path: Path, shard: str) -> None:
    """No file outside the component's folder is looked at, and the operator is not told to
    wait for a copy: such an index never becomes whole."""
    sharded_unet(tmp_path, json.dumps({"weight_map": {"a": shard}}))
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable() == {
        "m": "unet/diffusion_pytorch_model.safetensors.index.json names weight files outside "
        "its folder: no index Easel reads"
    }


def test_an_index_that_is_no_regular_file_is_refused_unread(tmp_path: Path) -> None:
    """A link to ``/dev/zero`` (read for ever, until memory runs out) or a FIFO (whose read
    waits for a writer): the scan refuses it from its ``stat``, and lists the others."""
    index = sharded_unet(tmp_path, "")
    index.unlink()
    index.symlink_to("/dev/zero")
    fifo_index = sharded_unet(tmp_path / "fifo", "")
    fifo_index.unlink()
    os.mkfifo(fifo_index)
    fifo_weights = diffusers_folder(tmp_path / "fifo" / "n", unet="UNet2DConditionModel")
    os.mkfifo(fifo_weights / "unet" / "diffusion_pytorch_model.safetensors")
    weights(tmp_path / "whole.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["whole"]
    not_a_file = "is not a regular file: no weights Easel reads"
    assert registry.unusable() == {
        "m": f"unet/diffusion_pytorch_model.safetensors.index.json {not_a_file}"
    }
    assert ModelRegistry(tmp_path / "fifo").unusable() == {
        "m": f"unet/diffusion_pytorch_model.safetensors.index.json {not_a_file}",
        "n": f"unet/diffusion_pytorch_model.safetensors {not_a_file}",
    }


@pytest.mark.parametrize("made", ["fifo", "endless"])
def test_a_split_releases_config_that_is_no_regular_file_is_not_read(
    tmp_path: Path, made: str
) -> None:
    """The scan reads a split release's ``model_index.json`` to tell its parts: a FIFO there
    would hang every scan and a link to ``/dev/zero`` never end it. The release stays listed;
    its load says what is wrong."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    config = tmp_path / "unet" / "split.config" / "model_index.json"
    config.unlink()
    if made == "fifo":
        os.mkfifo(config)
    else:
        config.symlink_to("/dev/zero")
    listed: list[list[str]] = []
    scan = threading.Thread(target=lambda: listed.append(ModelRegistry(tmp_path).names()))
    scan.daemon = True  # a hung scan must not hold the test run
    scan.start()
    scan.join(20)
    assert listed == [["split"]]


def test_a_config_file_is_read_only_when_small_and_regular(tmp_path: Path) -> None:
    """``model_index.json`` and ``config.json`` are read by every scan (a diffusers folder's
    components, a split release's parts): a FIFO or a file past 1 MiB is refused unread."""
    small = tmp_path / "model_index.json"
    small.write_text('{"unet": ["diffusers", "UNet2DConditionModel"]}')
    assert registry_module.config_json(small) == {"unet": ["diffusers", "UNet2DConditionModel"]}
    large = tmp_path / "large" / "model_index.json"
    large.parent.mkdir()
    large.write_text(" " * registry_module.CONFIG_MAX_BYTES + "{}")
    with pytest.raises(ValueError, match=r"holds 1048578 bytes, over 1048576"):
        registry_module.config_json(large)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        registry_module.config_json(fifo)


def test_an_index_too_large_or_naming_too_many_shards_is_no_index(tmp_path: Path) -> None:
    """Past 16 MB or 1,000 shards it is no weights index: not read whole, nor each shard
    stat'ed at every scan (the event loop checks a winner's weights once a second)."""
    many = {str(n): f"s{n}.safetensors" for n in range(1001)}
    sharded_unet(tmp_path / "many", json.dumps({"weight_map": many}))
    sharded_unet(tmp_path / "lists", json.dumps({"weight_map": {"a": ["s.safetensors"]}}))
    huge = sharded_unet(tmp_path / "huge", "")
    with huge.open("wb") as file:
        file.truncate(16 * 1024 * 1024 + 1)
    index = "unet/diffusion_pytorch_model.safetensors.index.json"
    assert ModelRegistry(tmp_path / "many").unusable() == {
        "m": f"{index} is no weights index: it names 1001 files, over 1000"
    }
    assert ModelRegistry(tmp_path / "lists").unusable() == {
        "m": f"{index} is no weights index: its weight_map maps no tensor to a file"
    }
    assert ModelRegistry(tmp_path / "huge").unusable() == {
        "m": f"{index} is no weights index: 16777217 bytes, over 16777216"
    }


def test_a_text_encoder_s_single_file_is_read_before_a_stale_index(tmp_path: Path) -> None:
    """transformers loads ``model.safetensors`` when it is there, before an index a sharded
    save left beside it (``save_pretrained`` removes no old index): the model is whole."""
    folder = diffusers_folder(
        tmp_path / "m", unet="UNet2DConditionModel", text_encoder="CLIPTextModel"
    )
    weights(folder / "unet" / "diffusion_pytorch_model.safetensors")
    (folder / "text_encoder" / "config.json").write_text("{}")
    weights(folder / "text_encoder" / "model.safetensors")
    shards = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    stale = folder / "text_encoder" / "model.safetensors.index.json"
    stale.write_text(json.dumps({"weight_map": shards}))
    assert ModelRegistry(tmp_path).names() == ["m"]
    (folder / "text_encoder" / "model.safetensors").unlink()  # now sharded: its index counts
    assert ModelRegistry(tmp_path).unusable() == {
        "m": "text_encoder/model-00001-of-00002.safetensors cannot be read: "
        "No such file or directory"
    }


def test_part_files_and_indexes_read_once_are_forgotten_once_gone(tmp_path: Path) -> None:
    """What was read of a split release's part files and of a weights index is dropped once
    the file is gone (renamed): kept only for the files there are."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    index = sharded_unet(tmp_path, json.dumps({"weight_map": {"a": "s.safetensors"}}))
    weights(index.parent / "s.safetensors")
    now = [0]
    registry = ModelRegistry(tmp_path, clock=lambda: now[0])
    assert registry.names() == ["m", "split"]
    encoders = tmp_path / "text_encoder"
    for n in range(3):  # an operator swaps T5 files and indexes, renaming the old ones
        t5 = next(encoders.glob("*t5*.safetensors"))
        t5.rename(encoders / f"t5-{n}.safetensors")
        index = index.rename(index.with_name(f"{n}.safetensors.index.json"))
        now[0] += SCAN_MAX_AGE_NS
        assert registry.names() == ["m", "split"]
    there = {*encoders.iterdir(), *(tmp_path / "vae").iterdir(), index}
    for cache in (split_parts._WIDTHS, registry_module._INDEXES):
        assert {path for path in cache._kept if path.is_relative_to(tmp_path)} <= there
    assert index in registry_module._INDEXES._kept

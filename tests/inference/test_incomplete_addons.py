"""Add-on files still being copied (or cut short) are left out of the registry's lists and
lookups until they are whole, the operator told once: LoRAs, embeddings, VAEs, upscalers and
face restorers (``.safetensors``, and ``.pth`` where pickles are allowed), ControlNets (a file,
or a diffusers folder's weights), IP-Adapters (with their image encoder's weights), and GGUF
checkpoints (a ``.gguf`` file alone, or in a diffusers folder's ``unet/``). Each used to be
offered, and every job that picked it failed or ran without it. A split release's T5 or CLIP
file still being copied is passed over for a whole one, else its load says so."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference import metadata as metadata_module
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


def test_a_split_release_s_t5_still_being_copied_is_refused_saying_so(tmp_path: Path) -> None:
    """Its header fits, so its load picked it and failed reading its weights; a GGUF T5's
    header does not read until it is whole, and it was "no T5 file that fits"."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    parts = tmp_path / "text_encoder"
    t5 = parts / "tiny-t5xxl.safetensors"
    whole = cut_in_its_data(t5)
    [entry] = ModelRegistry(tmp_path).scan().values()
    refused = "^split.safetensors finds no whole T5 file: "
    with pytest.raises(
        RenderInputError,
        match=refused + r"tiny-t5xxl.safetensors is incomplete \(\d+ of \d+ bytes\): still",
    ):
        split_part_files(entry)
    # A whole one that fits (another name, a later copy) is read meanwhile.
    (parts / "z-t5xxl.safetensors").write_bytes(whole)
    assert split_part_files(entry)["text_encoder_3"] == ("T5", parts / "z-t5xxl.safetensors")
    t5.write_bytes(whole)
    assert split_part_files(entry)["text_encoder_3"] == ("T5", t5)
    t5.unlink()
    (parts / "z-t5xxl.safetensors").unlink()
    cut_in_half(gguf_checkpoint(parts / "t5-Q8_0.gguf"))
    with pytest.raises(RenderInputError, match=refused + "t5-Q8_0.gguf is not a whole GGUF file"):
        split_part_files(entry)


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

"""Files whose names macOS wrote in NFD (``é`` as ``e`` + U+0301) are found by the names members
type, which keyboards send in NFC: Easel calls each file by the NFC form of its name on disk
(``inference.names.as_typed``), looks typed names up in that form, and opens the file by the
path it listed. Linux keeps a name's bytes as given, so these files are NFD on disk."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from bot.policy.addons import ANY_ADDON, AddonKind, check_loras, is_among, spelt_as_installed
from bot.policy.prompt_safety import plan_request
from cogs.choices import matching_choices
from cogs.lists import Listed, searched
from inference.control_units import OPTION_KEY, control_units, controlnet_files
from inference.prompts import WildcardLibrary, expand_prompt, find_embeddings
from inference.prompts.extra_networks import extract_extra_networks
from inference.registry import ModelRegistry
from inference.types import APPLIED_LORAS_OPTION, USED_EMBEDDINGS_OPTION, RenderRequest
from tests.support.checkpoint_files import stand_in_checkpoint


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


CAFE, AMELIE, ETOILE, MODELE = nfc("café"), nfc("Amélie"), nfc("étoile"), nfc("modèle")


def texts(template: str, library: WildcardLibrary) -> list[str]:
    return [expansion.text for expansion in expand_prompt(template, 1, library)]


def test_a_wildcard_named_in_nfd_is_drawn_by_its_name_typed_in_either_form(
    tmp_path: Path,
) -> None:
    (tmp_path / f"{nfd(CAFE)}.txt").write_text("latte\n", encoding="utf-8")
    assert [path.name.encode() for path in tmp_path.iterdir()] == [b"cafe\xcc\x81.txt"]
    (tmp_path / nfd("thé")).mkdir()
    (tmp_path / nfd("thé") / "vert.txt").write_text("matcha\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    assert library.names() == [CAFE, f"{nfc('thé')}/vert"]
    assert texts(f"a __{CAFE}__", library) == ["a latte"]
    assert texts(f"a __{nfd(CAFE)}__", library) == ["a latte"]  # pasted from the file's name
    assert texts(f"a __{nfc('thé')}/vert__ tea", library) == ["a matcha tea"]
    assert library.files_of(CAFE) == [Path(f"{nfd(CAFE)}.txt")]  # the file as it is on disk


def test_two_wildcard_files_whose_names_differ_only_in_form_keep_the_first_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first by sorted name on disk keeps the name (``e`` + U+0301 sorts before ``é``);
    the other is left out, logged once for the folder's version."""
    first = tmp_path / f"{nfd(CAFE)}.txt"
    first.write_text("mocha\n", encoding="utf-8")
    other = tmp_path / f"{CAFE}.txt"
    other.write_text("latte\n", encoding="utf-8")
    caplog.set_level("WARNING", logger="inference.prompts.wildcards")
    for _ in range(2):
        library = WildcardLibrary(tmp_path)
        assert library.names() == [CAFE]
        assert texts(f"__{CAFE}__", library) == ["mocha"]
    told = [record.getMessage() for record in caplog.records]
    assert told == [
        f"Wildcard __{CAFE}__ of {other} left out: its name differs from that of {first} only "
        f"in its Unicode form (NFC, NFD), and that one is read as __{CAFE}__"
    ]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models folder whose model, LoRA, embedding, VAE and upscaler are named in NFD."""
    stand_in_checkpoint(tmp_path / f"{nfd(MODELE)}.safetensors")
    stand_in_checkpoint(tmp_path / "lora" / f"{nfd(AMELIE)}.safetensors")
    stand_in_checkpoint(tmp_path / "embeddings" / f"{nfd(ETOILE)}.safetensors")
    stand_in_checkpoint(tmp_path / "vae" / f"{nfd(CAFE)}.safetensors")
    stand_in_checkpoint(tmp_path / "upscalers" / f"{nfd(CAFE)}-4x.safetensors")
    stand_in_checkpoint(tmp_path / "ControlNet" / f"{nfd(CAFE)}-canny.safetensors")
    return tmp_path


def test_the_registry_names_files_in_nfc_and_keeps_their_paths_on_disk(models: Path) -> None:
    registry = ModelRegistry(models)
    assert registry.names() == [MODELE]
    for typed in (MODELE, nfd(MODELE)):
        assert registry.resolve(typed).path == models / f"{nfd(MODELE)}.safetensors"
    assert registry.network_files("lora") == {
        AMELIE: models / "lora" / f"{nfd(AMELIE)}.safetensors"
    }
    assert list(registry.network_files("embedding")) == [ETOILE]
    assert list(registry.network_files("vae")) == [CAFE]
    canny = models / "ControlNet" / f"{nfd(CAFE)}-canny.safetensors"
    assert controlnet_files(registry) == {f"{CAFE}-canny": canny}
    [unit] = control_units(
        {OPTION_KEY: [{"module": "canny", "image": "map.png", "model": nfd(f"{CAFE}-canny")}]}
    )
    assert unit.model == f"{CAFE}-canny"
    for typed in (f"{CAFE}-4x", nfd(f"{CAFE}-4X")):
        assert registry.resolve_upscaler(typed) == (
            f"{CAFE}-4x",
            models / "upscalers" / f"{nfd(CAFE)}-4x.safetensors",
        )


def test_two_loras_whose_names_differ_only_in_form_are_one_name_the_first_keeps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As on any clash of names: the first found (by sorted name on disk) keeps it, the other
    is said hidden once."""
    first = stand_in_checkpoint(tmp_path / "lora" / f"{nfd(AMELIE)}.safetensors", b"one")
    other = stand_in_checkpoint(tmp_path / "lora" / f"{AMELIE}.safetensors", b"two")
    caplog.set_level("WARNING", logger="inference.registry")
    registry = ModelRegistry(tmp_path)
    for _ in range(2):
        assert registry.network_files("lora") == {AMELIE: first}
    told = [record.getMessage() for record in caplog.records]
    assert told == [f"lora {AMELIE} at {other} hidden by {first}"]


def test_a_lora_and_an_embedding_named_in_nfd_are_planned_by_their_names_typed(
    models: Path,
) -> None:
    """Through admission's planning with the registry's files: the tag typed in NFC (or pasted
    in NFD) is the installed LoRA, not "not installed; did you mean" the same-looking name,
    and the embedding's word typed in either form is found."""
    registry = ModelRegistry(models)

    def loras() -> list[str]:
        return list(registry.network_files("lora"))

    embeddings = list(registry.network_files("embedding"))
    for spelt in (nfc, nfd):
        prompt = f"<lora:{spelt(AMELIE)}:0.8> a {spelt(ETOILE)} cat"
        planned = plan_request(
            RenderRequest(prompt, seed=1, steps=2),
            set(),
            None,
            embeddings=embeddings,
            installed_loras=loras,
        )
        assert planned.options[APPLIED_LORAS_OPTION] == [AMELIE]
        assert planned.options[USED_EMBEDDINGS_OPTION] == [ETOILE]
    check_loras([nfd(AMELIE)], ANY_ADDON, loras)
    assert find_embeddings(f"a {nfd(ETOILE)}", embeddings) == [ETOILE]
    assert extract_extra_networks(f"<lora:{nfd(AMELIE)}:1>", loras())[2] == []


def test_an_admins_and_a_members_names_are_taken_in_nfc(models: Path) -> None:
    registry = ModelRegistry(models)
    loras = list(registry.network_files("lora"))
    assert spelt_as_installed("LoRA", nfd(AMELIE), loras) == AMELIE
    assert is_among(AddonKind.LORA, nfd(AMELIE), loras)
    assert is_among(AddonKind.VAE, f"{nfd(CAFE)}.safetensors", list(registry.network_files("vae")))


def test_autocomplete_and_the_lists_search_find_a_name_in_either_form() -> None:
    for name, typed in ((nfd(AMELIE), "Amé"), (AMELIE, nfd("amé")), (nfd(AMELIE), "AMÉL")):
        assert [choice.value for choice in matching_choices([name], typed)] == [name]
    row = Listed(AMELIE, f"`<lora:{AMELIE}:0.8>` — trigger words: {nfd('crème')}")
    assert searched([row], nfc("Crème")) == [row]
    assert searched([row], nfd("amélie")) == [row]

"""What admission pays for the embeddings on every command: the folder is walked again only
after a directory of it changed (never deciding wrongly: a file added or removed shows at the
next lookup), and the names are matched against a prompt's words with the answer of a search
per name. The engine reads only the embeddings admission recorded, per picture."""

from __future__ import annotations

import os
import random
import re
import string
import time
from pathlib import Path

import pytest

from inference.networks import EmbeddingPlaceholders, EmbeddingTokens
from inference.passes.jobs import readable_embeddings
from inference.prompts import extra_networks, find_embeddings
from inference.registry import FolderListing, ModelRegistry
from inference.types import (
    ALLOWED_EMBEDDINGS_OPTION,
    USED_EMBEDDINGS_OPTION,
    RenderInputError,
    RenderRequest,
)
from tests.support.checkpoint_files import stand_in_checkpoint


def settle(folder: Path) -> None:
    """Date every directory of ``folder`` 10 s back, as a folder left alone a while is."""
    past = time.time_ns() - 10_000_000_000
    for directory, _, _ in os.walk(folder):
        os.utime(directory, ns=(past, past))


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders each lookup walked."""
    walked: list[Path] = []
    walk = FolderListing.walk

    def counted(folder: Path, suffixes: tuple[str, ...]) -> FolderListing:
        walked.append(folder)
        return walk(folder, suffixes)

    monkeypatch.setattr(FolderListing, "walk", counted)
    return walked


def test_a_settled_folder_is_walked_once_and_a_change_shows_at_the_next_lookup(
    tmp_path: Path, walks: list[Path]
) -> None:
    embeddings = tmp_path / "embeddings"
    (embeddings / "styles").mkdir(parents=True)
    stand_in_checkpoint(embeddings / "fuzz.safetensors")
    stand_in_checkpoint(embeddings / "styles" / "sparkle.safetensors")
    (embeddings / "notes.txt").write_bytes(b"x")
    settle(tmp_path)
    registry = ModelRegistry(tmp_path)
    for _ in range(5):
        assert sorted(registry.network_files("embedding")) == ["fuzz", "sparkle"]
    assert len(walks) == 1
    stand_in_checkpoint(embeddings / "styles" / "glow.safetensors")  # in a subfolder
    assert sorted(registry.network_files("embedding")) == ["fuzz", "glow", "sparkle"]
    (embeddings / "fuzz.safetensors").unlink()
    assert sorted(registry.network_files("embedding")) == ["glow", "sparkle"]
    (embeddings / "styles").rename(embeddings / "moods")
    assert registry.network_files("embedding")["glow"].parent.name == "moods"
    walked = len(walks)
    settle(tmp_path)
    for _ in range(3):
        registry.network_files("embedding")
    assert len(walks) == walked + 1


def test_a_folder_changed_lately_or_holding_a_link_is_walked_at_every_lookup(
    tmp_path: Path, walks: list[Path]
) -> None:
    """A directory's mtime may not move for a file added within its clock's tick, and a link's
    target may come and go with no directory changing: neither listing is kept."""
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    stand_in_checkpoint(embeddings / "fuzz.safetensors")
    registry = ModelRegistry(tmp_path)
    for _ in range(3):
        registry.network_files("embedding")
    assert len(walks) == 3
    target = tmp_path / "elsewhere.safetensors"
    (embeddings / "linked.safetensors").symlink_to(target)
    settle(tmp_path)
    assert sorted(registry.network_files("embedding")) == ["fuzz"]  # its target is missing
    stand_in_checkpoint(target)
    assert sorted(registry.network_files("embedding")) == ["fuzz", "linked"]
    assert len(walks) == 5


def test_names_are_found_as_a_search_per_name_finds_them() -> None:
    """The word lookup gives the answer of a case-insensitive whole-word search for each name,
    over names and prompts with punctuation, digits, other scripts and the characters a
    search equates with ASCII letters (İ ı ſ K)."""
    pieces = [
        "cat",
        "Cat",
        "CAT",
        "bad_hands",
        "bad-hands",
        "x2",
        "ſun",
        "sun",
        "SUN",
        "kite",
        "\u212aite",
        "ıce",
        "İce",
        "ice",
        "café",
        "CAFÉ",
        "猫",
        "🎨",
        "straße",
        "STRASSE",
    ]
    names = [*pieces, "bad", "hands", "a.b", "a b", "Sun"]
    chance = random.Random(7)
    for _ in range(400):
        words = chance.choices([*pieces, *string.punctuation, "a.b", "a b"], k=chance.randint(1, 8))
        prompt = chance.choice([" ", "", ", "]).join(words)
        searched = sorted(
            name
            for name in names
            if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", prompt, re.IGNORECASE)
        )
        assert find_embeddings(prompt, names) == searched, prompt


def test_the_ascii_lookalikes_are_every_character_a_search_equates_with_ascii() -> None:
    everything = "".join(chr(c) for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000)
    equated = {
        found
        for letter in string.ascii_letters + string.digits + "_"
        for found in re.findall(re.escape(letter), everything, re.IGNORECASE)
    }
    assert equated == extra_networks._ASCII_LOOKALIKES


def test_a_job_reads_the_embeddings_admission_recorded_within_those_its_server_allows() -> None:
    installed = ["fuzz", "sparkle", "glow"]

    def readable(**options: object) -> list[str]:
        return readable_embeddings(RenderRequest("a", options=options), installed)

    assert readable() == installed  # journaled before admission recorded them
    assert readable(**{USED_EMBEDDINGS_OPTION: ["sparkle", "fuzz"]}) == ["fuzz", "sparkle"]
    both = {USED_EMBEDDINGS_OPTION: ["sparkle", "fuzz"], ALLOWED_EMBEDDINGS_OPTION: ["fuzz"]}
    assert readable(**both) == ["fuzz"]
    assert readable(**{USED_EMBEDDINGS_OPTION: []}) == []
    with pytest.raises(RenderInputError, match="used_embeddings option must be a list"):
        readable(**{USED_EMBEDDINGS_OPTION: "fuzz"})


def test_a_picture_reads_only_its_own_embeddings_of_a_pipeline_call() -> None:
    placeholders = EmbeddingPlaceholders({"a": ((10,), (900,)), "bc": ((11, 12), (901, 902))})
    assert placeholders.of(["bc"]) == EmbeddingTokens({(11, 12): (901, 902)})
    assert placeholders.of([]).placeholders == {}

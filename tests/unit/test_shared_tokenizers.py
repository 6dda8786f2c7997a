"""The suite's shared CLIP tokenizers (tests/support/tokenizers.py): one read per folder's
bytes, never a tokenizer read from other files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import CLIPTokenizer

from inference.tiny import load_clip_tokenizer
from tests.support.tokenizers import share_clip_tokenizers


@pytest.fixture
def suites_sharing_set_aside() -> Iterator[None]:
    """The suite's own sharing (tests/conftest.py), if on, is off for this test."""
    own = CLIPTokenizer.__dict__.get("from_pretrained")
    if own is not None:
        del CLIPTokenizer.from_pretrained
    try:
        yield
    finally:
        if own is not None:
            CLIPTokenizer.from_pretrained = own


def test_a_folder_is_read_once_and_a_changed_one_again(
    tmp_path: Path, suites_sharing_set_aside: None
) -> None:
    load_clip_tokenizer().save_pretrained(tmp_path / "first")
    load_clip_tokenizer().save_pretrained(tmp_path / "same")
    load_clip_tokenizer(pad_token="!").save_pretrained(tmp_path / "other-pad")
    undo = share_clip_tokenizers()
    try:
        first = CLIPTokenizer.from_pretrained(tmp_path / "first")
        assert CLIPTokenizer.from_pretrained(tmp_path / "first") is first
        assert CLIPTokenizer.from_pretrained(tmp_path / "same") is first  # the same bytes
        by_name = CLIPTokenizer.from_pretrained(pretrained_model_name_or_path=tmp_path / "same")
        assert by_name is first  # as diffusers' single-file loader asks
        other = CLIPTokenizer.from_pretrained(tmp_path / "other-pad")
        assert other is not first
        assert (first.pad_token, other.pad_token) == ("<|endoftext|>", "!")
        in_subfolder = CLIPTokenizer.from_pretrained(tmp_path, subfolder="other-pad")
        assert in_subfolder.pad_token == "!"  # the subfolder's files are the key
        assert CLIPTokenizer.from_pretrained(tmp_path, subfolder="other-pad") is in_subfolder

        load_clip_tokenizer(pad_token="!").save_pretrained(tmp_path / "first")  # rewritten
        assert CLIPTokenizer.from_pretrained(tmp_path / "first").pad_token == "!"
    finally:
        undo()


def test_undo_reads_every_folder_again(tmp_path: Path, suites_sharing_set_aside: None) -> None:
    load_clip_tokenizer().save_pretrained(tmp_path)
    undo = share_clip_tokenizers()
    try:
        first = CLIPTokenizer.from_pretrained(tmp_path)
    finally:
        undo()
    assert "from_pretrained" not in CLIPTokenizer.__dict__
    assert CLIPTokenizer.from_pretrained(tmp_path) is not first

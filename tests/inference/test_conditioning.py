"""The web UI prompt encoder on the tiny models: chunks, weights, clip skip, SDXL."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from inference.conditioning import (
    EMPTY_CHUNK,
    Conditioning,
    PromptEncoder,
    chunk_ids,
    emphasize,
    pad_to_chunks,
)
from inference.prompts import Chunk, build_plan
from inference.tiny import CLIP_BOS_ID, CLIP_EOS_ID, build_tiny_pipeline

CHUNK_POSITIONS = 77


@pytest.fixture(scope="module")
def sd15() -> Any:
    return build_tiny_pipeline("sd15")


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return build_tiny_pipeline("sdxl")


def chunks_of(prompt: str) -> tuple[Chunk, ...]:
    [sub] = build_plan(prompt, seed=1, steps=4).subprompts
    return sub.schedule[0].chunks


def encode(pipeline: Any, prompt: str, clip_skip: int = 1) -> Conditioning:
    with torch.inference_mode():
        return PromptEncoder(pipeline, clip_skip).encode(chunks_of(prompt))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return 1 - float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_weight_one_is_the_plain_encoding_bit_for_bit(sd15: Any) -> None:
    with torch.inference_mode():
        plain, _ = sd15.encode_prompt("a cat on a sofa", "cpu", 1, False)
    for prompt in ("a cat on a sofa", "(a cat on a sofa:1.0)", "(a cat:1) on a sofa"):
        assert torch.equal(encode(sd15, prompt).hidden, plain)


def test_heavier_weight_moves_further_from_the_plain_encoding(sd15: Any) -> None:
    plain = encode(sd15, "a red cat").hidden
    distances = [
        cosine_distance(encode(sd15, f"a (red:{weight}) cat").hidden, plain)
        for weight in (1.1, 1.4, 2.0)
    ]
    assert 0 < distances[0] < distances[1] < distances[2]
    # Same tokens, so the weighted encoding is the plain one emphasised: start, a, red x2...
    weights = torch.ones(CHUNK_POSITIONS)
    weights[2] = 2.0
    weighted = encode(sd15, "a (red:2.0) cat").hidden
    assert torch.allclose(weighted, emphasize(plain, weights))


def test_emphasis_scales_the_weighted_token_then_restores_the_mean() -> None:
    hidden = torch.rand(1, 5, 3) + 0.5
    weights = torch.tensor([1.0, 1.0, 2.0, 0.5, 1.0])
    result = emphasize(hidden, weights)
    ratio = (result / hidden)[0, :, 0]
    rescale = ratio[0]
    assert torch.allclose(ratio, weights * rescale)
    assert rescale != 1
    assert torch.allclose(result.mean(), hidden.mean())
    assert emphasize(hidden, torch.ones(5)) is hidden


def test_long_prompt_and_break_give_two_chunks(sd15: Any) -> None:
    long_prompt = " ".join(["cat"] * 150)
    assert len(chunks_of(long_prompt)) == 2
    assert encode(sd15, long_prompt).length == 2 * CHUNK_POSITIONS
    broken = encode(sd15, "a cat BREAK a dog")
    assert broken.length == 2 * CHUNK_POSITIONS
    # Each chunk is encoded alone: the second half is exactly "a dog" on its own.
    assert torch.equal(broken.hidden[:, CHUNK_POSITIONS:], encode(sd15, "a dog").hidden)


def test_chunk_ids_put_padding_after_the_first_end_token() -> None:
    chunk = Chunk((320, 2368), (1.0, 1.2))
    ids, weights = chunk_ids(chunk, CLIP_BOS_ID, CLIP_EOS_ID, 0)
    assert len(ids) == len(weights) == CHUNK_POSITIONS
    assert ids[:4] == [CLIP_BOS_ID, 320, 2368, CLIP_EOS_ID]
    assert set(ids[4:]) == {0}
    assert weights[:3] == [1.0, 1.0, 1.2]
    same_pad, _ = chunk_ids(chunk, CLIP_BOS_ID, CLIP_EOS_ID, CLIP_EOS_ID)
    assert same_pad[3:] == [CLIP_EOS_ID] * (CHUNK_POSITIONS - 3)
    empty, _ = chunk_ids(EMPTY_CHUNK, CLIP_BOS_ID, CLIP_EOS_ID, 0)
    assert empty[:3] == [CLIP_BOS_ID, CLIP_EOS_ID, 0]


def test_clip_skip_uses_an_earlier_layer_then_the_final_norm(sd15: Any) -> None:
    ids = sd15.tokenizer("a cat", padding="max_length", return_tensors="pt").input_ids
    with torch.inference_mode():
        output = sd15.text_encoder(ids, output_hidden_states=True)
        skipped = sd15.text_encoder.final_layer_norm(output.hidden_states[-2])
    assert torch.equal(encode(sd15, "a cat", clip_skip=2).hidden, skipped)
    assert not torch.equal(skipped, encode(sd15, "a cat").hidden)
    with pytest.raises(ValueError, match=r"clip skip must be in 1\.\.2, got 3"):
        PromptEncoder(sd15, clip_skip=3)


def test_padding_appends_empty_chunk_encodings(sd15: Any) -> None:
    with torch.inference_mode():
        encoder = PromptEncoder(sd15)
        short = encoder.encode(chunks_of("a cat"))
        padded = pad_to_chunks(short, 3, encoder.empty)
    assert padded.length == 3 * CHUNK_POSITIONS
    assert torch.equal(padded.hidden[:, :CHUNK_POSITIONS], short.hidden)
    assert torch.equal(padded.hidden[:, 2 * CHUNK_POSITIONS :], encoder.empty.hidden)
    assert pad_to_chunks(padded, 2, encoder.empty) is padded


def test_sdxl_concatenates_both_encoders_and_pools_the_second(sdxl: Any) -> None:
    with torch.inference_mode():
        plain, _, pooled, _ = sdxl.encode_prompt(
            "a cat", device="cpu", do_classifier_free_guidance=False
        )
    encoded = encode(sdxl, "a cat")
    assert torch.equal(encoded.hidden, plain)
    assert encoded.pooled is not None and torch.equal(encoded.pooled, pooled)
    long_weighted = encode(sdxl, "(a cat:1.3) " + "dog " * 100)
    assert long_weighted.length == 2 * CHUNK_POSITIONS
    assert long_weighted.hidden.shape[2] == plain.shape[2]
    # The pooled output comes from the first chunk, unweighted.
    first_chunk_only = encode(sdxl, "a cat " + "dog " * 73)
    assert long_weighted.pooled is not None and first_chunk_only.pooled is not None
    assert torch.equal(long_weighted.pooled, first_chunk_only.pooled)

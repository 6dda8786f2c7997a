"""The web UI prompt encoder on the tiny models: chunks, weights, clip skip, SDXL."""

from __future__ import annotations

import math
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
    rescale_bounds,
)
from inference.prompts import Chunk, build_plan
from inference.tiny import CLIP_BOS_ID, CLIP_EOS_ID, TINY_TEXT_HIDDEN, build_tiny_pipeline

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
    weights = [1.0] * CHUNK_POSITIONS
    weights[2] = 2.0
    weighted = encode(sd15, "a (red:2.0) cat").hidden
    assert torch.allclose(weighted, emphasize(plain, weights))


def test_emphasis_scales_the_weighted_token_then_restores_the_mean() -> None:
    hidden = torch.rand(1, 5, 3) + 0.5
    weights = [1.0, 1.0, 2.0, 0.5, 1.0]
    result = emphasize(hidden, weights)
    ratio = (result / hidden)[0, :, 0]
    rescale = ratio[0]
    assert torch.allclose(ratio, torch.tensor(weights) * rescale)
    assert rescale != 1
    assert torch.allclose(result.mean(), hidden.mean())
    assert emphasize(hidden, [1.0] * 5) is hidden


def web_ui_emphasis(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """The web UI's emphasis ("Original"), its factor unbounded."""
    weighted = hidden * torch.tensor(weights).reshape(1, -1, 1)
    return weighted * (hidden.mean() / weighted.mean())


# Weights 0.5..2, nested and [de-emphasised] brackets, weights of 0, two chunks.
ORDINARY_PROMPTS = (
    "a (red:1.1) cat",
    "a (red:0.8) cat on a sofa",
    "a ((red)) [cat] on ((a (sofa:1.2)))",
    "(masterpiece:1.2), best quality, (detailed face:1.1), [blurry], a cat (on a sofa:0.9)",
    "(cat:1.5) sitting (on:0.7) a (mat:1.05)",
    "(a red cat:0.5) (on a sofa:2)",
    "(a:0) cat",
    "(a red cat:0) on a (sofa:1.3)",
    "(long " + "word " * 100 + ":1.1) tail",
)


@pytest.mark.parametrize("prompt", ORDINARY_PROMPTS)
def test_ordinary_emphasis_is_the_web_uis_bit_for_bit_on_the_tiny_sdxl(
    sdxl: Any, prompt: str
) -> None:
    """Its encoders' positions have means of either sign (72 of the second's below 0, 5 above),
    which takes the web UI's factor a little past 1 / the weights (``a (red:1.1) cat``: 1.0064,
    over 1 / the smallest weight): applied as it is, as on every model whose means share a
    sign."""
    features = sdxl.text_encoder.config.hidden_size
    expected = []
    for chunk in chunks_of(prompt):
        _, weights = chunk.model_input(CLIP_BOS_ID, CLIP_EOS_ID, CLIP_EOS_ID)
        with torch.inference_mode():
            unweighted = Chunk(chunk.token_ids, (1.0,) * len(chunk.token_ids))
            plain = PromptEncoder(sdxl).encode([unweighted]).hidden
        # Each contiguous, as the encoder has it: a view's mean adds up in another order.
        per_encoder = plain.split([features, plain.shape[2] - features], dim=2)
        expected.append(
            torch.cat([web_ui_emphasis(part.contiguous(), weights) for part in per_encoder], 2)
        )
    assert torch.equal(encode(sdxl, prompt).hidden, torch.cat(expected, dim=1))


def test_a_zero_weight_on_a_position_holding_most_of_the_mean_keeps_the_web_uis_factor() -> None:
    """A weight of 0 takes its position's share out of the weighted mean: the weights alone
    can't bound the factor that restores it (here 6, restoring 4 from 2/3)."""
    hidden = torch.tensor([1.0, 1.0, 10.0]).reshape(1, 3, 1).expand(1, 3, 2)
    weights = [1.0, 1.0, 0.0]
    result = emphasize(hidden, weights)
    assert torch.equal(result, web_ui_emphasis(hidden, weights))
    assert result[0, :, 0].tolist() == pytest.approx([6.0, 6.0, 0.0])


def test_a_weighted_mean_near_0_neither_blows_up_nor_negates_the_encoding() -> None:
    """The web UI divides by the weighted mean: weights adding up to about 0 over positions of
    one mean scaled every position 50,000 times; past 0 they negated every position."""
    hidden = torch.ones(1, 5, 3)
    near_0 = [1.0, 1.0, 1.0, 1.0, -3.9999]
    assert rescale_bounds(near_0) == (1 / (2 * 3.9999), 2.0)
    # The factor clamped to twice 1 / the smallest weight (by magnitude).
    expected = hidden * torch.tensor(near_0).reshape(1, -1, 1) * 2
    assert torch.equal(emphasize(hidden, near_0), expected)
    # Past 0: the weights alone, no factor of the other sign.
    past_0 = [1.0, 1.0, 1.0, 1.0, -6.0]
    expected = hidden * torch.tensor(past_0).reshape(1, -1, 1)
    assert torch.equal(emphasize(hidden, past_0), expected)
    # Exactly 0 (1 over 0): not applied, no factor of any size.
    exactly_0 = [1.0, 1.0, -2.0]
    assert torch.equal(
        emphasize(torch.ones(1, 3, 1), exactly_0), torch.tensor(exactly_0)[None, :, None]
    )
    # All 0: nothing to restore (0 over 0), as before.
    assert torch.equal(emphasize(hidden, [0.0] * 5), torch.zeros(1, 5, 3))


def test_a_factor_past_every_bound_takes_no_position_past_a_weight_of_100() -> None:
    """Where a weight is 0 the weights set the factor no bound of their own: it takes no
    position past 100 times its encoding, the most planning allows, nor past 10,000 where every
    weight is under 0.01. The web UI's factor here is 500,001 (5.00001 restored from 0.00001)."""
    hidden = torch.tensor([1.0, -0.99999, 5.0]).reshape(1, 3, 1)
    for weights, cap in (([1.0, 1.0, 0.0], 100), ([0.001, 0.001, 0.0], 10_000)):
        assert rescale_bounds(weights)[1] == cap
        expected = hidden * torch.tensor(weights).reshape(1, -1, 1) * cap
        assert torch.equal(emphasize(hidden, weights), expected), weights


def test_a_float16_factor_past_its_range_is_still_clamped() -> None:
    """Float16's largest number is 65,504: its means' quotient here (256,001) is infinite, but
    the factor is worked out in float32 and clamped to 100 (no weight above 1), not dropped."""
    hidden = torch.tensor([8.0, -7.99609375, 1000.0], dtype=torch.float16).reshape(1, 3, 1)
    result = emphasize(hidden, [1.0, 1.0, 0.0])
    assert result.dtype == torch.float16
    assert result.flatten().tolist() == [800.0, -799.5, 0.0]


def test_a_weight_of_0_never_takes_a_float16_encoding_past_a_weight_of_100() -> None:
    """CUDA renders run in float16. A weight of 0 let the factor reach 10,000 and a weight up
    to 100 multiplied on top: on the tiny SDXL's second encoder the weighted mean of ``(x:0)
    (a:w) cat`` is about 0 at w 42.46, and its encoding was infinite there. No position is now
    taken past 100 times its plain encoding."""
    pipeline = build_tiny_pipeline("sdxl").to(torch.float16)
    plain = encode(pipeline, "x a cat").hidden[0, :, TINY_TEXT_HIDDEN:]
    means = plain.float().mean(dim=1)  # each position's: start, x, a, cat, end...
    pole = float(1 - (means.sum() - means[1]) / means[2])  # the weight of "a" making their sum 0
    assert 1 < pole < 100
    spacing = 2.0 ** (math.floor(math.log2(pole)) - 10)  # between float16 numbers there
    scales = []
    for step in range(-3, 4):
        weight = (round(pole / spacing) + step) * spacing
        weighted = encode(pipeline, f"(x:0) (a:{weight}) cat").hidden
        finite = bool(weighted.isfinite().all())
        assert finite, f"not finite at a weight of {weight}"
        second = weighted[0, :, TINY_TEXT_HIDDEN:].float()
        scales.append(float(second[2].norm() / plain[2].float().norm()))  # "a"'s: weight x factor
    # Near the pole the factor reaches its bound: "a" at 100 times, float16's rounding apart.
    assert max(scales) == pytest.approx(100, rel=1e-2), scales


def test_emphasis_reads_nothing_back_from_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read (a tensor's truth, ``item``) waits for the GPU's queued work, per chunk per
    encoder: what emphasis needs to know of the weights it reads from the Python list."""
    hidden = torch.rand(1, 5, 3) - 0.5

    def read_back(*_: object) -> None:
        raise AssertionError("a tensor read back to Python")

    cases = ([1.0] * 5, [1.0, 2.0, 1.0, 0.5, 1.0], [1.0, 1.0, 0.0, 1.0, -3.0], [0.0] * 5)
    with monkeypatch.context() as patched:
        for name in ("__bool__", "__float__", "item", "tolist"):
            patched.setattr(torch.Tensor, name, read_back)
        results = [emphasize(hidden, weights) for weights in cases]
    assert [tuple(result.shape) for result in results] == [(1, 5, 3)] * len(cases)


def test_a_positive_weight_bringing_the_mean_to_0_leaves_the_unweighted_tokens_as_they_are(
    sdxl: Any,
) -> None:
    """Not predictable from the weights: on the tiny SDXL's second encoder (its means of either
    sign, as no final norm centres them) the mean of ``(a:w) cat`` is 0 at w 14.42, on its
    first at w -126.6. The unweighted positions keep their encoding, times a factor within
    ``rescale_bounds``, never hundreds of times or negated."""
    plain = encode(sdxl, "a cat").hidden[..., TINY_TEXT_HIDDEN:]
    means = plain[0].mean(dim=1)  # each position's: start, a, cat, end...
    pole = float(1 - means.sum() / means[1])  # the weight of "a" making their sum 0
    assert 1 < pole < 100
    weighted = encode(sdxl, f"(a:{pole:.4f}) cat").hidden[..., TINY_TEXT_HIDDEN:]
    scale = weighted[0, 2] / plain[0, 2]  # "cat"'s features: one factor
    assert torch.allclose(scale, scale[0]), scale
    lowest, highest = rescale_bounds([1.0, pole, 1.0])
    assert lowest <= float(scale[0]) <= highest, float(scale[0])


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

"""``--chaos``, ``--tile``, ``--repeat``, ``--stop``, ``--relax`` and the clip skip option, from
the typed prompt to the request (pure: no model, no Discord)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.jobs.accounting import estimated_cost, quota_cost
from bot.policy.quota import Cost
from bot.requests import ImagineOptions, RequestError, build_request, build_requests
from inference.prompts import InlineFlagError, explain, parse_inline_flags
from inference.prompts.chaos import SPREAD, chaos_prompt

RANGES = {"chaos": (0, 100), "repeat": (1, 4), "stop": (10, 100)}


@pytest.mark.parametrize("flag", sorted(RANGES))
@given(data=st.data())
def test_numeric_flags_accept_their_range_and_name_it_otherwise(
    flag: str, data: st.DataObject
) -> None:
    low, high = RANGES[flag]
    value = data.draw(st.integers(-1000, 1000))
    if low <= value <= high:
        _, flags = parse_inline_flags(f"a cat --{flag} {value}")
        assert getattr(flags, flag) == value
    else:
        with pytest.raises(InlineFlagError, match=rf"--{flag} N with N between {low} and {high}"):
            parse_inline_flags(f"a cat --{flag} {value}")


@pytest.mark.parametrize("flag", ["tile", "relax"])
def test_switches_take_no_value(flag: str) -> None:
    assert getattr(parse_inline_flags(f"a cat --{flag}")[1], flag) is True
    with pytest.raises(InlineFlagError, match=f"--{flag} alone, without a value"):
        parse_inline_flags(f"a cat --{flag} yes")


def test_flags_become_engine_options_and_fast_keeps_its_meaning() -> None:
    request = build_request(
        ImagineOptions("a cat --tile --chaos 30 --stop 60 --relax --fast", clip_skip=2)
    )
    assert request.prompt == "a cat"
    assert request.options == {
        "tile": True,
        "chaos": 30,
        "stop": 60,
        "relax": True,
        "clip_skip": 2,
    }
    assert request.fast  # --fast is Easel's fast mode, not a queue class
    # Flags that change nothing leave no option behind.
    assert build_request(ImagineOptions("a cat --chaos 0 --stop 100")).options == {}


def test_tile_and_stop_split_batches() -> None:
    plain = build_request(ImagineOptions("a cat", seed=1))
    assert build_request(ImagineOptions("a cat --tile", seed=1)).pipeline_key() != (
        plain.pipeline_key()
    )
    assert build_request(ImagineOptions("a cat --stop 50", seed=1)).pipeline_key() != (
        plain.pipeline_key()
    )


def test_clip_skip_out_of_range_is_one_sentence() -> None:
    with pytest.raises(
        RequestError, match="clip skip must be a whole number between 1 and 12, got 13"
    ):
        build_request(ImagineOptions("a cat", clip_skip=13))


def test_repeat_makes_that_many_jobs_with_their_own_seeds() -> None:
    random_seeds = build_requests(ImagineOptions("a cat --repeat 3"))
    assert len(random_seeds) == 3 and len({r.seed for r in random_seeds}) == 3
    assert {r.prompt for r in random_seeds} == {"a cat"}
    # A typed seed goes on where the previous job's pictures stopped: no picture twice.
    typed = build_requests(ImagineOptions("a cat --repeat 3 --seed 10 --count 2"))
    assert [r.seed for r in typed] == [10, 12, 14]
    assert len(build_requests(ImagineOptions("a cat"))) == 1


def test_repeat_and_preset_outside_imagine_are_noted_not_silently_dropped() -> None:
    request = build_request(ImagineOptions("a cat --repeat 2 --preset anime"))
    assert request.notes == [
        "--repeat 2 is for /imagine only; this rendered once",
        "--preset anime is for /imagine only; it was not applied",
    ]


def test_relax_costs_no_quota_but_keeps_its_work_estimate() -> None:
    relaxed = build_request(ImagineOptions("a cat --relax", count=4))
    assert quota_cost(relaxed) == Cost(images=0, gpu_seconds=0.0)
    assert estimated_cost(relaxed).images == 4  # the scheduler's ETA still counts it
    plain = build_request(ImagineOptions("a cat", count=4))
    assert quota_cost(plain) == estimated_cost(plain)


def test_explain_reads_the_new_flags() -> None:
    explained = explain("a cat --chaos 20 --tile --repeat 2 --stop 50 --relax", seed=1, steps=4)
    assert explained["prompt"] == "a cat" and explained["warnings"] == []


_WEIGHTED = re.compile(r"\(([^():]*):([0-9.]+)\)")


@given(
    parts=st.lists(st.text(alphabet="abc xyz", min_size=1, max_size=8), min_size=1, max_size=6),
    chaos=st.integers(0, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_chaos_only_reweights_plain_parts_within_its_spread(
    parts: list[str], chaos: int, seed: int
) -> None:
    prompt = ",".join(parts)
    varied = chaos_prompt(prompt, chaos, seed)
    assert varied == chaos_prompt(prompt, chaos, seed)  # the seed decides
    # Unwrapping the weights gives the typed prompt back, character for character.
    assert _WEIGHTED.sub(lambda match: match.group(1), varied) == prompt
    for match in _WEIGHTED.finditer(varied):
        assert abs(float(match.group(2)) - 1) <= SPREAD * chaos / 100 + 0.005
    if chaos == 0:
        assert varied == prompt


def test_chaos_leaves_prompt_syntax_as_typed() -> None:
    prompt = "(sunset:1.2), <lora:ink:0.8>, __colors__, [day:night:0.5], a cat AND a dog"
    assert chaos_prompt(prompt, 100, 3) == prompt

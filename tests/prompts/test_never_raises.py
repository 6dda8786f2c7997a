"""Random text through every stage: nothing raises but a clear ``PromptError`` (a bad flag,
braces nested too deep), and no example runs away (each within 500 ms: a typical one takes
under a millisecond, so the bar catches blow-ups, not a busy machine's pauses; at 50 ms a
garbage collection on the shared CI machine failed a 0.45 ms example)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.prompts import (
    InlineFlagError,
    NestingError,
    PromptError,
    explain,
    parse_attention,
    schedule_prompt,
)
from inference.prompts.attention import MAX_ATTENTION_NESTING
from inference.prompts.composition import MAX_SUBPROMPTS
from inference.prompts.weights import MAX_WEIGHT

_PIECES = st.sampled_from(
    [
        *list("()[]{}:|\\<>_#$%,. -\n"),
        "a",
        "cat",
        "1",
        "0.5",
        "1.2",
        "BREAK",
        " AND ",
        "<lora:x:0.5>",
        "__w__",
        "--no",
        "é",
        "猫",
        "🎉",
        # Deep nesting: 39 levels of braces used to overflow Python's stack.
        "{" * 13,
        "[" * 40,
        "(" * 40,
    ]
)
PROMPTS = st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=60)


def setup_module() -> None:
    """Load the vocabulary and build dynamicprompts' parser once, outside the deadline."""
    explain("{a|b} __w__ (x) [y:z:2]", seed=1)


# The deadline catches a prompt whose reading blows up (milliseconds each otherwise), with room
# for a loaded CI machine's pauses.
@settings(max_examples=500, deadline=2_000, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=PROMPTS, steps=st.integers(1, 12))
def test_random_prompts_never_raise(prompt: str, steps: int) -> None:
    assert parse_attention(prompt)
    segments = schedule_prompt(prompt, steps)
    assert segments[-1].until_step == steps
    try:
        result = explain(prompt, seed=1, steps=steps)
    except InlineFlagError as error:  # a typed "--word" is checked on purpose
        assert "--" in prompt and str(error)
    except NestingError as error:
        # Braces past 10 levels, or ( ) and [ ] brackets past 100 open at once.
        brackets = prompt.count("(") + prompt.count("[")
        assert prompt.count("{") > error.limit or brackets > MAX_ATTENTION_NESTING
        assert f"at most {error.limit} levels" in str(error)
    except PromptError as error:
        if "a weight must be" in str(error):  # brackets or a typed weight past the bound
            assert "(" in prompt or ":" in prompt
        elif "AND parts add up" in str(error):  # their weights, without their signs
            assert "AND" in prompt and ":" in prompt
        else:  # more AND parts than a picture may be composed of
            assert prompt.count("AND") >= MAX_SUBPROMPTS and "joined by AND" in str(error)
    else:
        assert result["subprompts"] and result["seed"] == 1


@settings(max_examples=200, deadline=None)
@given(
    brackets=st.sampled_from([("{", "}"), ("{a|", "}"), ("[", "]"), ("[a|", "]"), ("(", ")")]),
    wildcard=st.booleans(),
    depth=st.integers(1, 400),
    closed=st.booleans(),
)
def test_any_nesting_depth_is_read_or_refused_clearly(
    brackets: tuple[str, str], wildcard: bool, depth: int, closed: bool
) -> None:
    opening, closing = brackets
    inner = "__w__" if wildcard else "x"
    prompt = opening * depth + inner + (closing * depth if closed else "")
    try:
        explain(prompt, seed=1, steps=4)
    except NestingError as error:
        assert depth > error.limit == (10 if opening.startswith("{") else MAX_ATTENTION_NESTING)
    except PromptError as error:  # 49 "(" multiply to 106.7, past the weights' bound
        assert opening == "(" and 1.1**depth > MAX_WEIGHT and "a weight must be" in str(error)

"""What one prompt may cost: planning stays far below its budget whatever the text, and what
the UNet evaluates per picture is bounded, so one member's prompt cannot stall the planning
threads or the render for everyone else."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import random
import string
import sys
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dynamicprompts.enums import SamplingMethod
from dynamicprompts.parser.parse import parse
from dynamicprompts.samplers.random import RandomSampler
from transformers import CLIPTokenizer

from bot.policy.prompt_safety import plan_request
from bot.user_errors import UserError
from inference.face_options import FIX_FACES_PROMPT
from inference.prompts import (
    NestingError,
    PromptError,
    WildcardLibrary,
    WildcardRecursionError,
    build_plan,
    expand_prompt,
    wildcards,
)
from inference.prompts.attention import MAX_ATTENTION_NESTING, parse_attention
from inference.prompts.composition import MAX_SUBPROMPTS
from inference.prompts.plan import _weighted_chunks
from inference.prompts.tokenizer import VOCAB_DIR, ClipTokenizer, default_tokenizer
from inference.prompts.wildcards import protect
from inference.types import RenderRequest

# A 4,000-character prompt (the cap) at the most steps a request may take.
STEPS = 150
T = TypeVar("T")


def _counted(monkeypatch: pytest.MonkeyPatch, function: Callable[..., T]) -> list[int]:
    """Counts the calls to ``function`` made through any module that imported it (work
    counted, not timed: a loaded CI machine would fail a time limit)."""
    calls = [0]

    def counting(*args: Any, **kwargs: Any) -> T:
        calls[0] += 1
        return function(*args, **kwargs)

    for module in list(sys.modules.values()):
        if vars(module).get(function.__name__) is function:
            monkeypatch.setattr(module, function.__name__, counting)
    return calls


def setup_module() -> None:
    build_plan("warm (up) [a|b]", seed=1, steps=2)  # the vocabulary, outside the timings


def test_unclosed_emphasis_cannot_make_planning_quadratic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each closing (or never-closed) bracket re-weights every piece since it opened, so 2,000
    # open brackets over 2,000 pieces, re-read at each of 150 alternating steps, took 9 s a
    # plan (a thread that goes on after the member's 2.5 s refusal, eight times for --n 8).
    parsed = _counted(monkeypatch, parse_attention)
    for opening in "([":
        prompt = "[a|b]" + (opening + "a") * 1990
        assert len(prompt) <= 4000
        with pytest.raises(NestingError, match=r"^the prompt nests \( \) and \[ \] brackets 1990"):
            build_plan(prompt, seed=1, steps=STEPS)
        with pytest.raises(NestingError, match=r"^the negative prompt nests .* write \\\( for"):
            build_plan("cat", prompt, seed=1, steps=STEPS)
    assert parsed[0] <= 1  # "cat"; the deep texts refused before the pieces x depth work
    # Deep but reasonable emphasis is still read, weights as the web UI computes them (a
    # hundred "(" multiply to 13,781, past the weights' bound: test_weight_bounds).
    plan = build_plan("[" * MAX_ATTENTION_NESTING + "cat", seed=1, steps=STEPS)
    [(text, weight)] = plan.subprompts[0].schedule[0].pieces
    assert text == "cat" and weight == pytest.approx(1.1**-MAX_ATTENTION_NESTING)


def test_a_refusal_names_the_prompt_and_how_to_fix_it() -> None:
    deep = "(" * (MAX_ATTENTION_NESTING + 1) + "a"
    with_faces = RenderRequest("cat", seed=1, steps=2, options={FIX_FACES_PROMPT: deep})
    with pytest.raises(UserError, match=r"^the fix-faces prompt nests .* 101 deep .* write \\\("):
        plan_request(with_faces, set(), None)
    with pytest.raises(PromptError, match="or write a lowercase 'and' where the words belong"):
        build_plan(" AND ".join(["cat"] * (MAX_SUBPROMPTS + 1)), seed=1)


def test_a_prompt_has_at_most_so_many_and_parts() -> None:
    # Each AND part is one more UNet row per picture at every step: 667 of them in a
    # 4,000-character prompt made one 8-picture job evaluate 5,344 rows in one call.
    parts = build_plan(" AND ".join(["cat"] * MAX_SUBPROMPTS), seed=1).subprompts
    assert len(parts) == MAX_SUBPROMPTS
    with pytest.raises(PromptError, match=rf"{MAX_SUBPROMPTS + 1} parts joined by AND; at most"):
        build_plan(" AND ".join(["cat"] * (MAX_SUBPROMPTS + 1)), seed=1)


def _wildcard_pack(folder: Path) -> WildcardLibrary:
    """50 files x 500 lines, as popular wildcard packs are; read once, outside the timings."""
    for index in range(50):
        lines = (f"value {line} of file {index}, with some words" for line in range(500))
        (folder / f"w{index}.txt").write_text("\n".join(lines), encoding="utf-8")
    library = WildcardLibrary(folder)
    expand_prompt("__w0__", 1, library)
    return library


def test_a_big_wildcard_folder_is_protected_once_not_at_every_look_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each value was protected (web UI syntax hidden from dynamicprompts) again at every
    # look-up, all 25,000 for a glob: 0.19 s each time.
    library = _wildcard_pack(tmp_path)
    protected = _counted(monkeypatch, protect)
    repeated = "__*__ " * 100
    distinct = " ".join("__" + "*" * stars + "__" for stars in range(1, 60))
    for prompt in (repeated, distinct):
        texts = [expansion.text for expansion in expand_prompt(prompt, 1, library, count=2)]
        assert all(text.count(" of file ") == prompt.count("__") // 2 for text in texts)
    # Each value once (those of __w0__ were, before), and each prompt.
    assert protected[0] <= 49 * 500 + 2


def test_drawing_several_values_of_a_wildcard_parses_only_those_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # {N$$__name__} parsed every value of the wildcard before drawing (16 s for a glob over
    # the pack, at each use: 200 s for this prompt) and counted none in the budget.
    library = _wildcard_pack(tmp_path)
    parsed = _counted(monkeypatch, parse)
    for drawn, prompt in ((3 * 30, "{3$$__*__}" * 30), (20 * 30, "{20$$__*__}" * 30)):
        parsed[0] = 0
        with contextlib.suppress(PromptError):  # the second, past 16,000 characters
            expand_prompt(prompt, 1, library)
        assert parsed[0] <= drawn + 31  # the values drawn, the prompt and each use's glob
    parsed[0] = 0
    with pytest.raises(PromptError, match="more than 16,000 characters"):
        expand_prompt("{99999999$$__*__}", 1, library)
    assert parsed[0] <= 2  # refused while drawing, before parsing any value


def test_a_wildcard_drawing_from_itself_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "itself.txt").write_text("x\n{2$$__itself__}\n", encoding="utf-8")
    with pytest.raises(WildcardRecursionError, match="__itself__ -> __itself__"):
        expand_prompt("{3$$__itself__}", 4, WildcardLibrary(tmp_path))  # was RecursionError


def test_drawing_from_a_wildcard_of_one_value_counts_in_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wildcard of one value drawn with {N$$...} was read at no cost: files whose one value
    # draws the next file twice made 2,048 draws (11 levels) that the budget never saw. Here
    # 256 draws (8 levels) against a budget of 100: each draw parses its value, so the real
    # budget of 1,000 (test_wildcards: test_expansion_stops_at_its_limits) took seconds.
    monkeypatch.setattr(wildcards, "MAX_WILDCARD_EXPANSIONS", 100)
    for level in range(8):
        value = f"{{2$$__w{level + 1}__}} {{2$$__w{level + 1}__}}"
        (tmp_path / f"w{level}.txt").write_text(f"{value}\n", encoding="utf-8")
    (tmp_path / "w8.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(PromptError, match="expand more than 100 times"):
        expand_prompt("{2$$__w0__}", 1, WildcardLibrary(tmp_path))


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each text dynamicprompts parses for the prompt language from here on."""
    texts: list[str] = []
    real_parse = wildcards.parse_prompt

    def counted(text: str, **options: Any) -> Any:
        texts.append(text)
        return real_parse(text, **options)

    monkeypatch.setattr(wildcards, "parse_prompt", counted)
    return texts


def test_a_wildcard_value_drawn_again_and_again_is_parsed_once(
    tmp_path: Path, parsed: list[str]
) -> None:
    # pyparsing takes milliseconds a value: a one-value wildcard drawn twice at each of 30
    # seeds, and a value drawn from a file at each, parse each value once, not at every draw.
    # A text no earlier test parsed (letters only: "_" and the like are shielded in values).
    marker = "lighthouse " + "".join(random.choices(string.ascii_lowercase, k=16))
    (tmp_path / "one.txt").write_text(f"a {marker}\n", encoding="utf-8")
    (tmp_path / "two.txt").write_text(f"red {marker}\nblue {marker}\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    for seed in range(30):
        expand_prompt("{2$$__one__}, {2$$__two__}", seed, library)
    values = sorted(text for text in parsed if marker in text)
    assert values == sorted({f"a {marker}", f"red {marker}", f"blue {marker}"}), values


def test_a_member_s_prompts_do_not_evict_the_wildcard_values_parsed(
    tmp_path: Path, parsed: list[str]
) -> None:
    # One cache of 512 held both: a member's prompts (a 4,000-character one of {a|b|c} choices
    # keeps 0.58 MB parsed) evicted the values every request drawing from a file parses again.
    marker = "harbour " + "".join(random.choices(string.ascii_lowercase, k=16))
    (tmp_path / "two.txt").write_text(f"red {marker}\nblue {marker}\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    expand_prompt("{2$$__two__}", 1, library)
    for index in range(520):  # more prompts than the one cache held
        expand_prompt(f"{{a|b}} {marker} {index}", 1)
    parsed.clear()
    expand_prompt("{2$$__two__}", 1, library)
    assert not [text for text in parsed if text.startswith(("red", "blue"))], parsed


def test_drawn_values_are_the_ones_dynamicprompts_draws(tmp_path: Path) -> None:
    # A stored seed gives the same text as before: duplicates, nested wildcards and choices
    # inside values, ranges, separators and a wildcard of one value.
    (tmp_path / "color.txt").write_text(
        "red\nblue\ngreen\nred\nyellow\n__inner__ cat\n{x|y}\n", encoding="utf-8"
    )
    (tmp_path / "inner.txt").write_text("a\nb\nc\nd\n", encoding="utf-8")
    (tmp_path / "one.txt").write_text("only\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    prompts = ("{2$$__color__}", "{0-3$$__color__}", "{9$$ and $$__color__}", "{2$$__one__}")
    for prompt in (*prompts, "{__color__}", "{2-$$__*o*__} {a|b}"):
        command = parse(protect(prompt))
        for seed in range(40):
            context = library.context(seed)
            plain = dataclasses.replace(
                context, samplers={**context.samplers, SamplingMethod.RANDOM: RandomSampler()}
            )
            expected = next(iter(plain.sample_prompts(command, 1))).text
            assert expand_prompt(prompt, seed, library)[0].text == expected


def test_cyclical_and_combinatorial_choices_are_bounded_like_random_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # {@...} and {!...} went to dynamicprompts' cyclical and combinatorial samplers, which parse
    # every value of a wildcard before the first (7 s for a glob over the pack) and count
    # nothing in the budget; each picture draws one text from its own seed, so there is no
    # batch to cycle through or enumerate.
    library = _wildcard_pack(tmp_path)
    parsed = _counted(monkeypatch, parse)
    for prompt in ("{@__*__|x}" * 3, "{!__*__|x}" * 3, "{@3$$__*__}", "{!2$$__*__}" * 3):
        parsed[0] = 0
        [expansion] = expand_prompt(prompt, 1, library)
        assert parsed[0] <= 20  # the prompt and the values drawn, not the wildcard's 25,000
        assert " of file " in expansion.text or "x" in expansion.text
    with pytest.raises(WildcardRecursionError):
        (tmp_path / "itself.txt").write_text("__itself__ again\n", encoding="utf-8")
        expand_prompt("{@__itself__|__itself__}", 1, WildcardLibrary(tmp_path))
    with warnings.catch_warnings(record=True) as printed:
        warnings.simplefilter("always")
        texts = {expand_prompt("{@a|b|c} {!d|e}", seed, library)[0].text for seed in range(40)}
    assert len(texts) > 3  # drawn by seed, as {a|b|c} is
    assert not printed  # dynamicprompts warned about {!d|e}, the prompt in its message


class _CountedRanks(dict[tuple[str, str], int]):
    """The merge ranks, counting look-ups: the merge loop's work."""

    looked_up = 0

    def get(self, pair: tuple[str, str], default: Any = None) -> Any:
        self.looked_up += 1
        return super().get(pair, default)


def test_a_long_word_is_tokenized_in_time_and_as_clip_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CLIP's merge loop is quadratic in a word's length: a 3,500-letter word took 0.5 s, and
    # 150 steps of [aa|ab|...] in front of one made 150 such words to a plan (80 s).
    letters = random.Random(1)
    word = "".join(letters.choice(string.ascii_lowercase) for _ in range(3500))
    # 20 texts of 26 chunks each: within the cap on all their chunks (MAX_SCHEDULED_CHUNKS).
    options = "|".join(a + b for a in string.ascii_lowercase[:10] for b in "xy")
    ranks = _CountedRanks(default_tokenizer().ranks)
    monkeypatch.setattr(default_tokenizer(), "ranks", ranks)
    plan = build_plan(f"[{options}]{word}", seed=1, steps=STEPS)
    # Linear in the letters (each pair looked up when it forms and when it is merged), 20
    # words of them: CLIP's loop looks up every pair again at each merge, ~6 million a word.
    assert ranks.looked_up <= 20 * 10 * len(word)
    reference = CLIPTokenizer(str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"))
    texts = [word, word[:75], "a photo of an astronaut riding a horse, trending on artstation"]
    texts += ["".join(letters.choice("abcdeilnorst") for _ in range(60)) for _ in range(200)]
    for text in texts:
        expected = reference(text, add_special_tokens=False)["input_ids"]
        assert default_tokenizer().encode(text) == expected
    scheduled = {entry.text for entry in plan.subprompts[0].schedule}
    assert len(scheduled) == 20


def test_a_wildcard_found_in_a_subfolder_is_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # dynamicprompts logged each such look-up with the name the member typed: words of a
    # private prompt in the bot's log.
    (tmp_path / "animals").mkdir()
    (tmp_path / "animals" / "secretpet.txt").write_text("cat\n", encoding="utf-8")
    with caplog.at_level(logging.DEBUG):
        assert expand_prompt("a __secretpet__", 1, WildcardLibrary(tmp_path))[0].text == "a cat"
    assert "secretpet" not in caplog.text


def _memory_held_by(work: Callable[[], object]) -> int:
    """Bytes still allocated after ``work`` (what caches kept of it)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_tokenizer_keeps_no_long_words() -> None:
    # Its cache of 65,536 words kept the ids of any word: ~18 KiB for a 3,500-letter one, over
    # a gigabyte once full now that such words are cheap to send.
    # Four words: tracemalloc makes each encoding several times slower.
    tokenizer = ClipTokenizer()
    letters = random.Random(2)
    words = ["".join(letters.choice(string.ascii_lowercase) for _ in range(3500)) for _ in range(4)]
    held = _memory_held_by(lambda: [tokenizer.encode(word) for word in words])
    assert held < 4 * 3500  # under a byte a letter: none of them kept


def test_the_plan_cache_holds_little_memory_when_full() -> None:
    # It kept 256 texts' plans: a 16,000-character text (wildcards expand that far) holds
    # ~0.5 MiB, 141 MiB once full.
    text = " ".join(f"word{index}" for index in range(3000))[:16000]
    build_plan(text + " x", seed=1, steps=1)  # its words in the tokenizer's cache
    held = _memory_held_by(lambda: build_plan(text + " y", seed=1, steps=1))
    assert held * _weighted_chunks.cache_info().maxsize < 24 * 2**20

"""Guild rules on a request (bot.policy.moderation), without Discord."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.policy import moderation
from bot.policy.moderation import (
    NsfwPolicy,
    check_request,
    find_banned_rendering,
    normalise,
    read_banned_words,
)
from bot.user_errors import UserError
from inference.prompts import PromptError, PromptPlan, build_plan, renderings
from inference.prompts.attention import BREAK_MARKER, parse_attention
from inference.prompts.tokenizer import default_tokenizer, split_words


def banned_in(texts: list[str], banned: set[str]) -> str | None:
    """The banned word found in plain texts (renderings without choices)."""
    return find_banned_rendering([(text,) for text in texts], banned)


def rules(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": None,
        "channel_id": 1,
        "channel_is_age_restricted": False,
        "allowed_channels": set(),
        "allowed_models": set(),
        "nsfw_policy": NsfwPolicy.ALLOW,
    }
    return base | overrides


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("An UGLY dog", "ugly"),
        ("uglyish dog", None),
        ("(ugly:1.3)", "ugly"),
        ("a big bad wolf", "bad wolf"),
        ("a big bad wolfhound", None),
    ],
)
def test_banned_words_match_whole_words_in_any_case(text: str, found: str | None) -> None:
    assert banned_in([text], {"ugly", "bad wolf"}) == found


def test_everything_is_allowed_by_default() -> None:
    check_request(**rules())


def test_channel_and_model_lists() -> None:
    with pytest.raises(UserError, match="not enabled in this channel; use it in <#2>"):
        check_request(**rules(allowed_channels={2}))
    check_request(**rules(allowed_channels={1, 2}))
    with pytest.raises(UserError, match="You may use: a, b"):
        check_request(**rules(model="c", allowed_models={"b", "a"}))
    check_request(**rules(model="a", allowed_models={"a"}))


def test_age_restricted_only_policy() -> None:
    with pytest.raises(UserError, match="age-restricted"):
        check_request(**rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY))
    check_request(
        **rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY, channel_is_age_restricted=True)
    )


# --- what the model reads, not what was typed ------------------------------------------------

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\ufe0f"]


def test_normalise_removes_invisible_characters_folds_width_and_case() -> None:
    assert normalise("ｃＡ\u200bT\u00ad  \tＤog") == "cat dog"
    assert normalise("STRASSE") == normalise("straße")


@settings(max_examples=300)
@given(
    word=st.sampled_from(["cat", "gore", "bad wolf"]),
    inserts=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(INVISIBLE)), max_size=5),
    upper=st.booleans(),
    fullwidth=st.booleans(),
)
def test_invisible_characters_anywhere_in_a_banned_word_are_still_caught(
    word: str, inserts: list[tuple[int, str]], upper: bool, fullwidth: bool
) -> None:
    disguised = word.upper() if upper else word
    if fullwidth:  # NFKC folds full-width letters to ASCII
        disguised = "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in disguised)
    for position, char in inserts:
        at = position % (len(disguised) + 1)
        disguised = disguised[:at] + char + disguised[at:]
    assert banned_in([f"a {disguised}, photo"], {word}) == word
    glued = banned_in([f"a x{disguised}, photo"], {word})
    invisible = "".join(INVISIBLE)
    word_alone = disguised.lstrip(invisible)
    if word_alone == disguised:
        assert glued is None  # whole words only
    elif not any(char in invisible for char in word_alone.rstrip(invisible)):
        assert glued == word  # the tokenizer splits the "x" off where an invisible one is


@pytest.mark.parametrize(
    "prompt",
    [
        "a {c|c}at",
        "a c<x:y>at",
        "a [c|c]at",
        "a [c|d]at",
        "a [dog:cat:0.5] on a mat",
        "a [cat::3]",
        "a [c|x][a|y]t",
        "a (c:1.2)at",
        "a [[c|d]at:dog:2]",
        "a dog AND a cat:0.5",
        "a c)cat",
        "a __cat__",  # no wildcards folder: the model reads the name
        "a red_cat2",  # CLIP splits words at "_" and digits
        "a cat৴ on a mat",  # and at number characters that are no decimal digit
        # A bracket changes the weight: the text encoder reads each side as its own piece.
        *("x(cat", "a cat(s) on a mat", "(cat)s", "cat[s]", "cat[c|1", "(cat:1.2)s"),
        # BREAK next to what the attention parser splits on is a separator.
        *("cat(BREAK)", "a BREAK\\cat", "a cat\\BREAK", "a BREAK(cat)", "(cat)BREAK"),
        *("BREAK[cat]", "BREAK[cat|"),
    ],
)
def test_every_text_the_prompt_can_render_is_checked(prompt: str) -> None:
    assert banned_in([prompt], {"cat"}) is None or "cat" in prompt
    plan = build_plan(prompt, seed=1)
    assert find_banned_rendering(plan.renderings(), {"cat"}) == "cat"


@pytest.mark.parametrize(
    "prompt",
    # ":)" is no weight; an escaped bracket is text.
    ["a [c|d]ats", "con[c|d]at", "a [dog:cats:0.5]", "c, at", "a c\\(at", "c(a:)t"],
)
def test_renderings_keep_whole_word_matching(prompt: str) -> None:
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {"cat"}) is None


def test_the_negative_prompt_is_checked_after_expansion() -> None:
    assert find_banned_rendering(build_plan("a dog", "no GORE").renderings(), {"gore"}) == "gore"
    plan = build_plan("a dog", "{go|go}re", seed=1)
    assert find_banned_rendering(plan.renderings(), {"gore"}) == "gore"


def test_a_prompt_with_too_many_combinations_to_check_is_refused() -> None:
    plan = build_plan("[a|b]" * 30, seed=1)
    with pytest.raises(UserError, match="more than 4,096"):
        find_banned_rendering(plan.renderings(), {"a much longer banned phrase"})
    assert find_banned_rendering(plan.renderings(), set()) is None  # nothing to check


_PIECES = st.sampled_from(
    [
        *("c", "a", "t", "cat", "CAT", "ｃ", " ", ",", "\u200b", "\u00ad", "™", "<x:y>", "__w__"),
        *("T", "\u0345", "\u0308"),  # a mark case folding makes a letter of, or composes
        *("[", "]", "|", ":", "::", "(", ")", "{", "}", "\\", "\\(", "1", "0.5", "2]"),
        *("[c:", "[c|", ":0.5]", "a:1.1)", " AND ", " BREAK ", "BREAK", ":0)"),
    ]
)


def shown_to_the_text_encoder(plan: PromptPlan) -> list[str]:
    """Every text the plan's schedules give the text encoder: each piece alone (the encoder
    tokenizes pieces of different weights apart, so a bracket is a word boundary; a BREAK
    merged at weight 0 is read as text), and each schedule entry's pieces joined (a BREAK read
    as a space)."""
    entries = [entry for sub in (*plan.subprompts, plan.negative) for entry in sub.schedule]
    alone = [text for entry in entries for text, weight in entry.pieces]
    joined = [
        "".join(" " if (text, weight) == BREAK_MARKER else text for text, weight in entry.pieces)
        for entry in entries
    ]
    return [*alone, *joined]


def read_as_a_word(texts: list[str], word: str) -> bool:
    """Whether CLIP's tokenizer splits one of ``texts`` into ``word`` among its words (BPE
    aside: ``xcat`` ends in the token ``cat</w>`` but is no word "cat")."""
    return any(word in split_words(unicodedata.normalize("NFC", text).lower()) for text in texts)


@settings(max_examples=1000, deadline=None)
@given(prompt=st.lists(_PIECES, max_size=16).map("".join), steps=st.integers(1, 8))
# A prompt refused (a weight past the bound): the ci profile's 1,000 examples draw none.
@example(prompt="[c:11111", steps=4)
# Weights that close a bracket, their ":" or number written where renderings lost them.
@example(prompt="c([a:1.1)t", steps=1)
@example(prompt="c(a:[1.1|x])t", steps=1)
@example(prompt="c(a:[1.1:x:2])t", steps=1)
@example(prompt="c([a:[1.1|x])t", steps=1)
@example(prompt="c(a\\:1.1)t", steps=1)
@example(prompt="(c[a\\:1|b].5)t", steps=1)
# Characters the tokenizer splits at but normalising removed or made letters of.
@example(prompt="a cat™ on a mat", steps=1)
@example(prompt="a dog\u00adcat", steps=1)
@example(prompt="x\u200bcat", steps=1)
@example(prompt="a cat\u0345", steps=1)
@example(prompt="a caT\u0308", steps=1)
@example(prompt="CAT\\\u0308", steps=1)
@example(prompt="a caT[\u0308|\u0308] on a mat", steps=1)
def test_whatever_any_step_shows_the_text_encoder_is_checked(prompt: str, steps: int) -> None:
    try:
        plan = build_plan(prompt, seed=1, steps=steps)
    except PromptError:
        return
    shown = shown_to_the_text_encoder(plan)
    if read_as_a_word(shown, "cat") or banned_in(shown, {"cat"}) is not None:
        assert find_banned_rendering(plan.renderings(), {"cat"}) == "cat", shown


# Pieces of weights and brackets around "c", "a" and "t": a weight's ":", its number and its
# ")" may each come from a choice; brackets may be left open or close nothing.
_WEIGHT_PIECES = st.sampled_from(
    [
        *("(", "(", "[", "[", ")", "]", ":", "\\:", "\\", "\\(", "|", " ", " AND ", "BREAK"),
        *("1", "1.1", ".", "-", "5 ", "[1|x]", "[|.5]", "[:x:2]", "[1.1:x:2]", "[c|", "|x]"),
        *(":1.1)", ":[1.1|x])", ":[1.1:x:2])", "\\:[1|x])", ":[|-]1)", ":1[.5|x])"),
        *("[x\\:1|y].5)", "[\\:|x]1)", "[x\\:1:y\\:2:1]", "[a\\:1:x:0.5])"),
    ]
)
# (steps, first_pass_steps): every first pass of 1 to 8 steps, and hires passes after one.
_PASSES = [*((steps, None) for steps in range(1, 9)), (3, 2), (4, 4), (2, 5)]


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(st.lists(_WEIGHT_PIECES, max_size=3).map("".join), min_size=4, max_size=4).map(
        lambda between: "c".join(between[:2]) + "a" + "t".join(between[2:])
    ),
    where=st.sampled_from(["prompt", "negative", "AND"]),
)
@example(text="ca(:[1.1|x])t", where="negative")
@example(text="c(a\\:[|-]1)t", where="AND")
def test_weights_and_brackets_written_by_choices_are_resolved_for_every_pass(
    text: str, where: str
) -> None:
    prompt, negative = {
        "prompt": (text, ""),
        "negative": ("dog", text),
        "AND": (f"dog AND {text}", ""),
    }[where]
    found = None
    for steps, first_pass_steps in _PASSES:
        try:
            plan = build_plan(
                prompt, negative, seed=1, steps=steps, first_pass_steps=first_pass_steps
            )
        except PromptError:
            return
        shown = shown_to_the_text_encoder(plan)
        if read_as_a_word(shown, "cat") or banned_in(shown, {"cat"}) is not None:
            found = plan
            break
    if found is not None:
        assert find_banned_rendering(found.renderings(), {"cat"}) == "cat"


_NUMBER_CHARACTERS = st.sampled_from([*" +-.019", "\u0663", "\u00a0", "\n", "e"])


@settings(max_examples=300, deadline=None)
@given(
    number=st.lists(_NUMBER_CHARACTERS, max_size=6).map("".join),
    colon=st.sampled_from([":", "\\:"]),  # "\\:" is text to [a|b] but a ":" to weights
)
def test_a_weight_is_read_as_the_attention_parser_reads_it(number: str, colon: str) -> None:
    """No miss and no false alarm: "c(a:N)t" shows "cat" just when N is a weight."""
    prompt = f"c(a{colon}{number})t"
    shown = "".join(text for text, _ in parse_attention(prompt))
    expected = "cat" if shown == "cat" else None
    assert find_banned_rendering([renderings(prompt)], {"cat"}) == expected


def test_a_word_read_where_brackets_or_break_split_the_pieces_is_checked() -> None:
    """A BREAK at weight 0 merges into the word before it (-0.0 == 0.0): the encoder reads
    "jailBREAK" as one word."""
    plan = build_plan("(jail BREAK:0)", seed=1)
    assert ("jailBREAK", 0.0) in plan.subprompts[0].schedule[0].pieces
    assert find_banned_rendering(plan.renderings(), {"jailbreak"}) == "jailbreak"


def test_nested_choices_sharing_a_prefix_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each choice keeps and drops a ":1" its option wrote: renderings share the prefix, and
    reading it once per path took seconds at 145 characters (doubling per level)."""
    reads = []
    monkeypatch.setattr(moderation, "checkpoint", lambda: reads.append(1))
    prompt = "a"
    for _ in range(16):
        prompt = f"([{prompt}\\:1|y])"
    assert len(prompt) == 145
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {"cat"}) is None
    assert len(reads) < 2_000  # 182 parts read; every path: millions


def test_deeply_nested_choices_are_read_without_recursion() -> None:
    prompt = "(" + "[1|\\:]" * 496 + ")"  # 2,978 characters: one choice inside the next
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {"cat"}) is None


def test_word_boundaries_beside_non_letters_add_no_variants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each bracket is a word boundary or not; beside a "," or ")" that makes no difference to
    CLIP's tokens, so a long banned phrase does not multiply the endings carried along (25,819
    texts read here, 21 s for a 4,000-character prompt, before spaces beside non-letters were
    dropped)."""
    assert normalise("bad , wolf (x)") == normalise("bad,wolf(x)") == "bad,wolf(x)"
    reads = []
    counted = moderation.normalise
    monkeypatch.setattr(moderation, "normalise", lambda text: reads.append(1) or counted(text))
    prompt = "(masterpiece:1.2), (best quality), ((detailed)), [blurry], (red hair:1.1), " * 5
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {"x" * 100}) is None
    assert len(reads) < 2_000
    assert find_banned_rendering([("a #tag",)], {"#tag"}) == "#tag"  # its "#" is a boundary


@pytest.mark.parametrize(
    ("prompt", "word"),
    [
        ("a cat™ on a mat", "cat"),
        ("a dog\u00adcat", "cat"),
        ("a (x\u00adcat:1.2)", "cat"),
        ("a ℡cat", "cat"),
        ("catⅦ", "cat"),
        *((f"x{char}cat", "cat") for char in ("\u200b", "\u2060", "\ufeff", "\u034f", "\ufe0f")),
        ("nsfw™", "nsfw"),
        ("™nsfw", "nsfw"),
        # A mark starting a part: the part is read apart before it joins the lowered tail.
        *(("a caT[\u0308|\u0308] on a mat", "cat"), ("a caT[\u0308:\u0308:5] on a mat", "cat")),
        *(("a ca[T|T]\u0308 on a mat", "cat"), ("a bitcH[\u0331|\u0331] here", "bitch")),
    ],
)
def test_a_word_the_tokenizer_reads_apart_is_not_joined_to_its_neighbour(
    prompt: str, word: str
) -> None:
    plan = build_plan(prompt, seed=1)
    assert read_as_a_word(shown_to_the_text_encoder(plan), word)
    assert find_banned_rendering(plan.renderings(), {word}) == word


@pytest.mark.parametrize(
    ("prompt", "word"),
    [("a चूत™ here", "चूत"), ("a चूत\u200bcat", "चूत"), ("™चूत", "चूत"), ("a बुर™", "बुर")],
)
def test_a_banned_word_holding_a_mark_is_found_beside_what_splits_it(
    prompt: str, word: str
) -> None:
    """The tokenizer reads the word's marks apart, as the text's: next to a ``™`` or a
    zero-width space it gets the word's own tokens."""
    tokens = default_tokenizer().encode
    assert ",".join(map(str, tokens(word))) in ",".join(map(str, tokens(prompt)))
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {word}) == word


def test_invisible_characters_inside_a_word_still_join_it() -> None:
    assert banned_in(["a ｃａ\u200bT"], {"cat"}) == "cat"
    assert banned_in(["a xcat\u200bs", "a c\u200bats"], {"cat"}) is None  # "xcat", "cats"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("黒猫", "猫"),  # its tokens end with 猫's
        ("猫耳", "猫"),  # accepted: 猫 inside a longer word
        ("くろねこ", "ねこ"),
        ("แมวดำ", "แมว"),  # Thai: no spaces between words either
        ("a blackcat", None),  # Latin letters keep whole words
        ("黒いcat", "cat"),  # a switch of script ends a word
        ("黒いcats", None),
        ("검은고양이", None),  # so does Hangul: Korean spaces its words
        ("고양이가", "고양이"),  # but writes a noun's particles onto it
        ("고양이를 봐", "고양이"),
    ],
)
def test_a_word_of_a_script_written_without_spaces_is_found_inside_a_run(
    text: str, found: str | None
) -> None:
    assert banned_in([text], {"猫", "ねこ", "แมว", "cat", "고양이"}) == found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        *(("a жnaked woman", "naked"), ("a ωnaked woman", "naked"), ("a אnaked", "naked")),
        *(("a ωcat", "cat"), ("a catω", "cat"), ("a catж woman", "cat")),
        *(("a xкошка", "кошка"), ("a кошкаx", "кошка"), ("x고양이", "고양이")),
        # A letter with no name in Python 3.11's Unicode data (Tangut) is a script of its own.
        *(("a \U00017000naked woman", "naked"), ("a cat\U00017000", "cat")),
        # Within one script a banned word inside a longer word is still none (``a blackcat``).
        *(("a blackcat", None), ("a ñcat", None), ("a cate", None), ("a чкошка", None)),
        ("a \u02bbcat", None),  # a modifier letter, which scripts share, continues a word
    ],
)
def test_a_letter_of_another_script_ends_a_word(text: str, found: str | None) -> None:
    """CLIP's tokenizer keeps a word's own tokens beside a letter of another script:
    ``жnaked`` gives the text encoder ``naked``'s."""
    if found == "naked":  # glued before it
        assert default_tokenizer().encode("naked")[0] in default_tokenizer().encode(text)
    assert banned_in([text], {"naked", "cat", "кошка", "고양이"}) == found


def test_a_letter_of_another_script_written_by_a_choice_ends_a_word() -> None:
    for prompt, word in (("a [x|ж]naked woman", "naked"), ("a cat[s|ω] on a mat", "cat")):
        assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {word}) == word


@pytest.mark.parametrize(
    ("typed_by_the_admin", "texts"),
    [
        (
            ("İSTANBUL", "istanbul"),
            (
                "istanbul skyline",
                "İstanbul",
                "ISTANBUL",
                "i\u0307stanbul",
                "istanbul™",
                "İstanbul™",
            ),
        ),
        (("KIZ", "kız"), ("bir kız portresi", "KIZ", "KIZLAR KIZ", "kiz")),
    ],
)
def test_a_word_typed_with_turkish_capitals_matches_its_lower_case_and_back(
    typed_by_the_admin: tuple[str, str], texts: tuple[str, ...]
) -> None:
    """Lower casing makes ``İSTANBUL`` ``i̇stanbul`` (a combining dot above) and ``KIZ``
    ``kiz``: ``İ``, ``I`` and ``ı`` read ``i`` on both sides, stored as an admin's word is."""
    assert normalise("İSTANBUL") == normalise("ıstanbul") == "istanbul"
    for typed in typed_by_the_admin:
        (stored,) = read_banned_words(typed)
        for text in texts:
            assert banned_in([text], {stored}) == stored, (typed, text)


@pytest.mark.parametrize(
    "text",
    [
        *("a hot-dog", "hot_dog", "hot.dog", "hot,dog", "hot, dog", "hot -- dog"),
        *("hot\u00addog", "hot™dog", "(hot)[dog]"),
    ],
)
def test_a_phrase_is_found_with_punctuation_between_its_words(text: str) -> None:
    assert banned_in([text], {"hot dog"}) == "hot dog"
    assert banned_in([text.replace("dog", "34")], {"hot34"}) == "hot34"  # a digit: no space


@pytest.mark.parametrize(
    ("text", "found"),
    [
        *(("hotdog", None), ("hot2dog", None), ("hot dogs", None), ("shot-dog", None)),
        ("hot-dog5", "hot dog"),  # a digit ends a word, as in "red_cat2"
    ],
)
def test_a_phrase_joined_by_punctuation_keeps_whole_words(text: str, found: str | None) -> None:
    assert banned_in([text], {"hot dog"}) == found


def test_a_run_of_punctuation_written_by_choices_still_joins_a_phrase() -> None:
    """Punctuation reads as one space, so a run longer than the phrase (the characters each
    variant carries along) written one choice at a time is no way around it."""
    plan = build_plan("hot" + "[-|_]" * 12 + "dog", seed=1)
    assert find_banned_rendering(plan.renderings(), {"hot dog"}) == "hot dog"
    assert find_banned_rendering(plan.renderings(), {"hot-dog"}) is None  # "-_" as written


def test_a_word_with_punctuation_is_matched_as_written() -> None:
    assert banned_in(["x-cat™"], {"-cat"}) == "-cat"  # split at the "™"
    assert banned_in(["x cat"], {"-cat"}) is None
    assert banned_in(["18+"], {"18+"}) == "18+"

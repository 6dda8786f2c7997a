"""A request's prompt planned before it is queued (bot.policy.prompt_safety), without Discord."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.edits import request_from_infotext
from bot.policy.prompt_safety import PromptPlanner, explain_prompt, plan_request
from bot.requests import MAX_PROMPT_CHARS, RequestError
from bot.user_errors import UserError
from inference.infotext import format_infotext, png_with_infotext
from inference.passes.jobs import image_jobs
from inference.passes.picture_prompts import rendered_prompts
from inference.prompts import WILDCARD_DRAWS_OPTION, PlannedDraws, WildcardLibrary, expand_prompt
from inference.types import RenderRequest

PARAMETERS = "Steps: 3, Sampler: Euler, CFG scale: 6, Seed: 77, Size: 64x64"
# dynamicprompts reads this legal prompt slowly (about a second on a laptop).
HEAVY = ("{a|b}" * 800)[:MAX_PROMPT_CHARS]


@pytest.fixture
def wildcards(tmp_path: Path) -> Path:
    (tmp_path / "animal.txt").write_text("cat\n", encoding="utf-8")
    (tmp_path / "pet.txt").write_text("dog\ncat\nbird\nfish\n", encoding="utf-8")
    # Each level doubles: 2**19 words from a 6-character prompt.
    for level in range(20):
        value = f"__grow{level + 1}__ __grow{level + 1}__" if level < 19 else "word"
        (tmp_path / f"grow{level}.txt").write_text(value + "\n", encoding="utf-8")
    return tmp_path


def test_wildcards_are_checked_as_they_expand(wildcards: Path) -> None:
    request = RenderRequest("a __animal__", seed=5)
    with pytest.raises(UserError, match="'cat' is banned"):
        plan_request(request, {"cat"}, wildcards)
    checked = plan_request(request, {"dog"}, wildcards)
    drawn = {"texts": ["a __animal__", "a cat"], "draws": [[0, 5, 1, []]]}
    assert checked.options[WILDCARD_DRAWS_OPTION] == drawn


def test_every_picture_of_a_request_is_checked(wildcards: Path) -> None:
    library = WildcardLibrary(wildcards)

    def pets(seed: int) -> list[str]:
        return [expansion.text for expansion in expand_prompt("__pet__", seed, library, count=4)]

    # A seed whose first picture is harmless but a later one of four draws the banned word.
    seed = next(seed for seed in range(1000) if pets(seed)[0] != "cat" and "cat" in pets(seed))
    plan_request(RenderRequest("a __pet__", seed=seed, count=1), {"cat"}, wildcards)
    with pytest.raises(UserError, match="'cat' is banned"):
        plan_request(RenderRequest("a __pet__", seed=seed, count=4), {"cat"}, wildcards)


def test_a_batch_at_the_top_seed_is_checked_with_the_seeds_it_renders(wildcards: Path) -> None:
    """The second picture of ``--seed 4294967295 --count 2`` renders at seed 4294967296, as
    the web UI counts, and is checked with what that seed draws."""
    library = WildcardLibrary(wildcards)
    banned = expand_prompt("__pet__", 4294967296, library)[0].text
    assert expand_prompt("__pet__", 4294967295, library)[0].text != banned
    top = RenderRequest("a __pet__", seed=4294967295, count=2)
    plan_request(dataclasses.replace(top, count=1), {banned}, wildcards)
    with pytest.raises(UserError, match=f"'{banned}' is banned"):
        plan_request(top, {banned}, wildcards)


def test_a_random_seed_is_made_concrete_before_the_check(wildcards: Path) -> None:
    checked = plan_request(RenderRequest("a __pet__", seed=-1), set(), wildcards)
    assert checked.seed != -1


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a __nosuch__", "There is no wildcard `__nosuch__`"),
        ("{" * 39 + "a" + "}" * 39, "nests { } braces 39 deep; at most 10 levels"),
        ("__grow0__", "more than 16,000 characters"),
        ("a cat --nosuchflag", "nosuchflag"),
    ],
)
def test_prompt_language_errors_are_clear_refusals(
    wildcards: Path, prompt: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        plan_request(RenderRequest(prompt, seed=1), set(), wildcards)


def test_explain_reads_wildcards_as_a_render_does(wildcards: Path, tmp_path: Path) -> None:
    """Without a wildcard folder a render keeps ``__name__`` as typed, and /explain says so
    instead of refusing it; with one, both refuse it, in sentences that end once."""
    missing = tmp_path / "no-such-folder"
    plan_request(RenderRequest("a __nosuch__ cat", seed=1), set(), missing)
    assert explain_prompt("a __nosuch__ cat", "", None, missing)["prompt"] == "a __nosuch__ cat"
    with pytest.raises(UserError) as refused:
        explain_prompt("a __nosuch__ cat", "", None, wildcards)
    assert str(refused.value) == (
        "There is no wildcard `__nosuch__`. Wildcards here: `__animal__`, `__grow0__`, "
        "`__grow10__`, `__grow11__`, `__grow12__`, `__grow13__`, `__grow14__`, `__grow15__`, "
        "`__grow16__`, `__grow17__` and 12 more (`/wildcards` lists them all). "
        "Fix the prompt and try again."
    )
    with pytest.raises(UserError) as refused:
        plan_request(RenderRequest("a __pets__", seed=1), set(), wildcards)
    assert str(refused.value).startswith(
        "There is no wildcard `__pets__`; did you mean `__pet__`? Wildcards here: `__animal__`"
    )


def test_an_unknown_wildcard_is_told_to_the_member_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The member reads which wildcard is unknown and which there are, never the operator's
    folder; the log keeps nothing of it: the name is the member's words (audit AUD15)."""
    (tmp_path / "colour.txt").write_text("red\n", encoding="utf-8")
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as refused:
        plan_request(RenderRequest("a __color__ cat", seed=1), set(), tmp_path)
    assert str(refused.value) == (
        "There is no wildcard `__color__`; did you mean `__colour__`? "
        "Wildcards here: `__colour__`. Fix the prompt and try again."
    )
    assert "folder" not in str(refused.value)
    assert "color" not in caplog.text
    (tmp_path / "colour.txt").unlink()
    with pytest.raises(UserError) as refused:
        plan_request(RenderRequest("a __color__ cat", seed=1), set(), tmp_path)
    assert str(refused.value) == (
        "There is no wildcard `__color__`; there are no wildcards here. "
        "Fix the prompt and try again."
    )


def test_an_unknown_wildcard_inside_a_wildcard_file_blames_the_file_not_the_prompt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The member typed ``__scene__``, whose file names ``__missing__``: the member cannot fix
    the prompt, so is told which wildcard is broken; the operator is warned of the file."""
    (tmp_path / "scene.txt").write_text("a __missing__ at dusk\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError) as refused:
        plan_request(RenderRequest("a __scene__", seed=1), set(), tmp_path)
    assert str(refused.value) == (
        "The wildcard `__scene__` is broken: its file names `__missing__`, which is no "
        "wildcard here. Tell a moderator, and leave that wildcard out until it is fixed."
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["A wildcard file names __missing__, which is no wildcard: scene.txt"]


def test_one_length_cap_for_prompts_and_negative_prompts(wildcards: Path) -> None:
    plan_request(RenderRequest("a" * MAX_PROMPT_CHARS, seed=1), set(), wildcards)
    with pytest.raises(RequestError, match="prompt is 4,001 characters long; at most 4,000"):
        plan_request(RenderRequest("a" * 4001, seed=1), set(), wildcards)
    with pytest.raises(RequestError, match="negative prompt is 4,001"):
        plan_request(RenderRequest("a", negative_prompt="b" * 4001, seed=1), set(), wildcards)


def test_a_picture_s_parameters_have_the_same_cap() -> None:
    huge = f"{'a cat, ' * 140_000}\nNegative prompt: blurry\n{PARAMETERS}"
    with pytest.raises(RequestError, match="picture's prompt is 980,000 characters long"):
        request_from_infotext(huge, None, ())
    # A prompt typed with /vary replaces the stored one, so only that one counts.
    assert request_from_infotext(huge, "a dog", ()).prompt == "a dog"
    long_negative = f"a cat\nNegative prompt: {'x' * 5000}\n{PARAMETERS}"
    with pytest.raises(RequestError, match="negative prompt is 5,000"):
        request_from_infotext(long_negative, None, ())


async def test_planning_runs_off_the_event_loop_within_its_budget() -> None:
    planner = PromptPlanner(None)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    explained = await planner.explain(HEAVY, "", 150, guild_id=None)
    planning_s = time.perf_counter() - started
    ticker.cancel()
    assert explained["subprompts"]
    # Parsing on the loop would let the ticker run once or twice at most; off it, the loop keeps
    # ticking through the parse. Counted, not timed: a loaded machine's pauses (a garbage
    # collection in the planning thread) stretch single gaps but leave most ticks in place.
    assert planning_s > 0.3, "the prompt parsed too fast to show anything"
    assert len(ticks) >= 10

    unparsed = HEAVY.replace("a", "c")  # not in the parse cache yet
    with pytest.raises(UserError, match=r"took longer than 0\.05 s; simplify it"):
        await PromptPlanner(None, explain_budget_s=0.05).explain(unparsed, "", 150, guild_id=None)


def test_a_pass_over_a_picture_plans_the_picture_s_own_prompt(tmp_path: Path) -> None:
    template = "a {for|x}{bidden|y} cat"
    picture = tmp_path / "picture.png"
    infotext = format_infotext(
        template, "{ugly|blurry}", {"Steps": 3, "Sampler": "Euler", "Seed": 1}
    )
    picture.write_bytes(png_with_infotext(Image.new("RGB", (64, 64)), infotext))

    def drawn(seed: int) -> str:
        return expand_prompt(template, seed, WildcardLibrary(None))[0].text

    banned_at = next(seed for seed in range(1000) if drawn(seed) == "a forbidden cat")
    clean_at = next(seed for seed in range(1000) if "forbidden" not in drawn(seed))
    creative = {"upscale_factor": 2, "upscale_mode": "creative"}
    for mode, options in (("faces", {"fix_faces": True}), ("upscale", creative)):
        # An empty prompt: the pass renders the picture's own, which is drawn and checked here.
        request = RenderRequest("", mode=mode, init_image=str(picture), options=options)
        with pytest.raises(UserError, match="'forbidden' is banned"):
            plan_request(dataclasses.replace(request, seed=banned_at), {"forbidden"}, None)
        planned = plan_request(dataclasses.replace(request, seed=clean_at), {"forbidden"}, None)
        draws = PlannedDraws.of(planned.options)
        assert draws is not None
        assert draws.drawn.keys() >= {(template, clean_at), ("{ugly|blurry}", clean_at)}
        assert rendered_prompts(planned) == (template, "{ugly|blurry}")  # what the engine plans


def test_a_stored_picture_that_is_gone_is_not_asked_to_be_uploaded_again(tmp_path: Path) -> None:
    # A Fix faces button on a result whose file the bot no longer keeps.
    gone = RenderRequest("", mode="faces", init_image=str(tmp_path / "gone.png"), seed=1)
    with pytest.raises(UserError, match="no longer stored on the bot") as refused:
        plan_request(gone, (), None)
    assert "upload it again" not in str(refused.value)


def test_a_varied_batch_is_planned_at_the_seed_the_engine_renders(wildcards: Path) -> None:
    """With a variation (strength above 0) every picture keeps the main seed, as in the web
    UI: its wildcards are drawn, and checked, at that seed, and the engine renders those."""
    library = WildcardLibrary(wildcards)

    def pets(seed: int) -> list[str]:
        return [expansion.text for expansion in expand_prompt("__pet__", seed, library, count=2)]

    seed = next(seed for seed in range(1000) if pets(seed)[0] != "cat" and pets(seed)[1] == "cat")
    varied = RenderRequest(
        "a __pet__", seed=seed, count=2, variation_seed=-1, variation_strength=0.3
    )
    checked = plan_request(varied, {"cat"}, wildcards)  # picture 2 no longer draws at seed + 1
    assert checked.variation_seed not in (None, -1)  # stored concrete, as the seed
    jobs = image_jobs(checked, WildcardLibrary(wildcards), loras=(), embeddings=())
    assert [job.prompt for job in jobs] == [f"a {pets(seed)[0]}"] * 2
    assert [job.seed for job in jobs] == [seed, seed]
    assert [job.variation_seed for job in jobs] == [
        checked.variation_seed,
        checked.variation_seed + 1,
    ]
    with pytest.raises(UserError, match="'cat' is banned"):  # without a variation: seed + 1
        plan_request(dataclasses.replace(varied, variation_strength=0.0), {"cat"}, wildcards)

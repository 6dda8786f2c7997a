"""A server's add-on lists (bot.policy.addons): LoRAs, embeddings, VAEs, upscalers and
ControlNets it leaves out are refused at admission naming only what it allows; embeddings it
leaves out are plain prompt text for its jobs; an empty list allows every installed file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.compare import Axis, parse_axis, plan_comparison
from bot.infotext_import import Installed, request_from_infotext_text
from bot.policy.addons import (
    ANY_ADDON,
    APPLIED_LORAS_OPTION,
    UPSCALERS_FILLED_OPTION,
    USED_EMBEDDINGS_OPTION,
    AddonKind,
    AddonRules,
    addon_unavailable,
    allowed_addons_only,
    kinds_to_read,
    listable_addons,
    spelt_as_among,
    spelt_as_installed,
    under_addon_rules,
)
from bot.policy.moderation import NsfwPolicy, check_request
from bot.policy.prompt_safety import OperatorWarnings, plan_request
from bot.user_errors import Reason, UserError
from cogs.admin import describe_guild
from cogs.imagine import with_hires_fix
from cogs.use_settings import _allowed_here
from db.guild_settings import GuildList, GuildSettings
from inference.compare import COMPARE_OPTION
from inference.passes.jobs import image_jobs
from inference.registry import ModelRegistry
from inference.types import (
    ALLOWED_CONTROLNETS_OPTION,
    ALLOWED_EMBEDDINGS_OPTION,
    RenderInputError,
    RenderRequest,
)
from inference.upscale import LANCZOS, LATENT_UPSCALERS
from tests.support.checkpoint_files import stand_in_checkpoint

MANY = [f"style-{index:02}" for index in range(12)]


def rules(**allowed: list[str]) -> AddonRules:
    return AddonRules(
        {AddonKind[kind.upper()]: frozenset(names) for kind, names in allowed.items()}
    )


def refusal(request: RenderRequest, addon_rules: AddonRules) -> str:
    with pytest.raises(UserError) as refused:
        under_addon_rules(request, addon_rules)
    assert refused.value.reason is Reason.MODEL
    return str(refused.value)


def test_an_empty_list_allows_every_add_on_and_changes_nothing() -> None:
    request = RenderRequest(
        "a cat",
        options={"vae": "anything", "hires_upscaler": "4x-Any", "controlnet": []},
    )
    assert under_addon_rules(request, ANY_ADDON) is request
    assert under_addon_rules(request, rules(controlnet=["kept"])) is request


def test_a_vae_upscaler_or_controlnet_left_out_is_refused_naming_only_those_allowed() -> None:
    allowed = rules(vae=["family-vae"], upscaler=["4x-Safe"], controlnet=["canny-sd15"])
    vae = refusal(RenderRequest("a", options={"vae": "nsfw-vae"}), allowed)
    assert (
        vae == "The VAE `nsfw-vae` is not installed or not allowed here. You may use: family-vae."
    )
    upscale = RenderRequest("", mode="upscale", options={"upscaler": "4x-Secret"})
    # Lanczos is no file and always works: named among those usable.
    assert refusal(upscale, allowed).endswith("You may use: 4x-Safe, Lanczos.")
    # Only ``.safetensors`` is a file name's suffix: ``family-vae.nsfw`` is another file.
    assert "`family-vae.nsfw` is not" in refusal(
        RenderRequest("a", options={"vae": "family-vae.nsfw"}), allowed
    )
    unit = {"module": "canny", "image": "map.png", "model": "canny-xl"}
    control = refusal(RenderRequest("a", options={"controlnet": [unit]}), allowed)
    assert control.startswith("The ControlNet `canny-xl` is not installed or not allowed here")
    # A unit naming no model is given one of those the server allows, by the engine.
    unnamed = RenderRequest("a", options={"controlnet": [{"module": "canny", "image": "m.png"}]})
    assert under_addon_rules(unnamed, allowed).options[ALLOWED_CONTROLNETS_OPTION] == ["canny-sd15"]
    assert unnamed.pipeline_key() != under_addon_rules(unnamed, allowed).pipeline_key()
    # As the engine finds them: upscalers in any case, VAEs by file name; no file, no list.
    for options in (
        {"vae": "family-vae.safetensors"},
        {"vae": "Automatic"},
        {"hires_upscaler": "4X-SAFE", "upscaler": "Lanczos"},
        {"hires_upscaler": "Latent (bicubic)"},
    ):
        request = RenderRequest("a", options=options)
        assert under_addon_rules(request, allowed) is request, options


def test_an_upscale_naming_no_upscaler_gets_the_operators_default_else_the_first() -> None:
    request = RenderRequest("", mode="upscale", init_image="in.png")
    kept = under_addon_rules(request, rules(upscaler=["b-Up", "A-up"]))
    assert kept.options["upscaler"] == "A-up"
    listed = AddonRules({AddonKind.UPSCALER: frozenset({"b-Up", "A-up"})}, "b-up")
    assert under_addon_rules(request, listed).options["upscaler"] == "b-up"
    left_out = AddonRules({AddonKind.UPSCALER: frozenset({"b-Up", "A-up"})}, "4x-Op")
    assert under_addon_rules(request, left_out).options["upscaler"] == "A-up"


def test_an_upscale_naming_a_latent_upscaler_is_refused_naming_what_enlarges() -> None:
    """A latent upscaler enlarges a hires fix's latents only: an upscale naming one failed at
    render (refunded, in public); it is refused at admission, saying so (it is no file: it was
    called not installed or not allowed, also where the server lists it)."""
    upscale = RenderRequest("", mode="upscale", options={"upscaler": "latent (BICUBIC)"})
    installed = {AddonKind.UPSCALER: ["4x-Any", "2x-Other"]}
    # No list: the installed files are read for the refusal, and named.
    assert kinds_to_read(upscale, ANY_ADDON) == [AddonKind.UPSCALER]
    with pytest.raises(UserError) as unlisted:
        under_addon_rules(upscale, AddonRules({}, installed=installed))
    assert str(unlisted.value) == (
        "The upscaler `latent (BICUBIC)` only enlarges a hires fix's latents, not a picture; "
        "/upscale takes: 2x-Other, 4x-Any, Lanczos."
    )
    assert unlisted.value.reason is Reason.INPUT  # the member's mistake, not a server's rule
    # A list: only what it allows of them, never a latent one it lists.
    listed = AddonRules({AddonKind.UPSCALER: frozenset({"Latent", "4x-Any"})}, installed=installed)
    with pytest.raises(UserError, match="latents, not a picture; /upscale takes: 4x-Any, Lanczos"):
        under_addon_rules(upscale, listed)
    # The hires fix still takes one.
    hires = RenderRequest("a", options={"hires_scale": 2, "hires_upscaler": "Latent (bicubic)"})
    assert under_addon_rules(hires, listed) is hires


def test_an_admins_list_takes_a_name_as_installed_in_any_letter_case() -> None:
    """``/easel-admin addon ... add lanczos`` was refused while the choices offered Lanczos."""
    upscalers = [LANCZOS, *LATENT_UPSCALERS, "4x-Ultra"]
    assert spelt_as_among("lanczos", upscalers) == LANCZOS
    assert spelt_as_among("LATENT (bicubic)", upscalers) == "Latent (bicubic)"
    assert spelt_as_among("4X-ultra", upscalers) == "4x-Ultra"
    assert spelt_as_among("8x-Ultra", upscalers) is None
    # Two files differing in letter case: the exact one, else neither is guessed.
    loras = ["Style", "style"]
    assert spelt_as_among("style", loras) == "style"
    assert spelt_as_among("STYLE", loras) is None


def test_an_admin_naming_what_is_not_installed_is_told_what_is() -> None:
    """/easel-admin default-model and addon: nothing installed is the operator's to fix;
    a name several files match in letter case names them; a typo gets the closest ones."""
    assert spelt_as_installed("model", "TINY", ["tiny", "sdxl"]) == "tiny"
    with pytest.raises(UserError) as nothing:
        spelt_as_installed("model", "x", [])
    assert str(nothing.value) == "No model is installed; ask Easel's operator to install one."
    with pytest.raises(UserError) as clash:
        spelt_as_installed("model", "TINY", {"tiny", "Tiny"})
    assert str(clash.value) == "`TINY` matches the models `Tiny` and `tiny`; type one exactly."
    many = [f"model-{n:02d}" for n in range(40)] + ["dreamshaper-8"]
    with pytest.raises(UserError) as typo:
        spelt_as_installed("model", "dreamshapr-8", many)
    assert str(typo.value) == (
        "No model named `dreamshapr-8` is installed; did you mean `dreamshaper-8`? "
        "Pick one from the name choices."
    )


def test_a_reused_hires_upscaler_the_server_leaves_out_gives_way_to_lanczos() -> None:
    # A button or Remix on a picture made while the operator's upscaler was allowed.
    parent = RenderRequest("a", options={"hires_scale": 2, "hires_upscaler": "4x-Op"})
    here = under_addon_rules(parent, rules(upscaler=["4x-Safe"]))
    assert here.options["hires_upscaler"] == "Lanczos"
    assert here.notes == ["hires upscaler '4x-Op' is not allowed here; Lanczos is used instead"]
    # A job queued with it meanwhile cannot be changed (it may share a batch): withheld.
    with pytest.raises(UserError):
        allowed_addons_only(parent, rules(upscaler=["4x-Safe"]))


def test_one_refusal_for_not_installed_and_left_out_named_in_part() -> None:
    # A LoRA the list leaves out, and a model: one sentence, "did you mean" from the usable.
    with pytest.raises(UserError) as refused:
        rules(lora=MANY).check(AddonKind.LORA, "stlye-1`1")
    assert str(refused.value) == (
        "The LoRA `stlye-11` is not installed or not allowed here; did you mean `style-11` or "
        "`style-10` or `style-01`? You may use: "
        + ", ".join(MANY[:10])
        + " and 2 more (`/loras` lists them all)."
    )
    assert str(addon_unavailable(AddonKind.LORA, "stlye-1`1", MANY)) == str(refused.value)
    # A server allowing 300 models: the old refusal named them all (9,683 characters here,
    # cut in its middle to fit a message); now the closest three and ten, within a message.
    models = {f"checkpoint-model-number-{index:03}-v2" for index in range(300)}
    with pytest.raises(UserError) as model_refused:
        check_request(
            model="checkpoint-model-number-15-v2",
            channel_id=1,
            channel_is_age_restricted=False,
            allowed_channels=(),
            allowed_models=models,
            nsfw_policy=NsfwPolicy.ALLOW,
        )
    said = str(model_refused.value)
    assert model_refused.value.reason is Reason.MODEL and len(said) < 700
    assert said.startswith("The model `checkpoint-model-number-15-v2` is not installed or not")
    assert "did you mean `checkpoint-model-number-215-v2` or" in said
    assert said.endswith("checkpoint-model-number-009-v2 and 290 more (`/models` lists them all).")


def test_lora_tags_are_checked_as_the_prompt_expands(tmp_path: Path) -> None:
    (tmp_path / "pose.txt").write_text("<lora:nsfw-pose:0.8>\n", encoding="utf-8")
    allowed = rules(lora=["family-style"])
    for prompt in ("a cat <lora:nsfw-pose:0.8>", "a cat __pose__", "a {<lora:nsfw-pose:1>|}"):
        request = RenderRequest(prompt, seed=1, count=2)
        with pytest.raises(UserError, match="The LoRA `nsfw-pose` is not installed or not allowed"):
            plan_request(request, (), tmp_path, allowed)
        assert plan_request(request, (), tmp_path).seed == request.seed  # no list: every LoRA
    fine = RenderRequest("a cat <lora:family-style:0.8>", seed=1)
    assert plan_request(fine, (), tmp_path, allowed).seed == fine.seed  # not refused


def test_the_start_gate_checks_the_loras_the_plans_apply(tmp_path: Path) -> None:
    (tmp_path / "pick.txt").write_text("<lora:nsfw:1>\n", encoding="utf-8")
    safe = rules(lora=["safe"])
    # Drawn as ``safe`` at admission: the gate lets them start (it read the text as typed).
    for prompt in ("a cat {<lora:safe:1>|<lora:safe:1>|<lora:nsfw:1>}", "a <lora:{safe|safe}:1>"):
        planned = plan_request(RenderRequest(prompt, seed=1), (), tmp_path, safe)
        assert planned.options[APPLIED_LORAS_OPTION] == ["safe"]
        allowed_addons_only(planned, safe)
    # Queued while no LoRA was listed: a wildcard's draw and a /compare cell's LoRA are seen.
    base = RenderRequest("a cat", seed=1, model="m")
    cells = parse_axis(Axis.PROMPT, "cat, cat <lora:nsfw:1>", base.prompt, 50, ["m"])
    compared = plan_comparison(base, cells, None).request
    for request in (RenderRequest("a cat __pick__", seed=1), compared):
        queued = plan_request(request, (), tmp_path)
        with pytest.raises(UserError, match="`nsfw` is not installed or not allowed"):
            allowed_addons_only(queued, safe)
    # Filled at each admission, whatever the request held.
    forged = RenderRequest("a <lora:nsfw:1>", seed=1, options={APPLIED_LORAS_OPTION: []})
    assert plan_request(forged, (), tmp_path).options[APPLIED_LORAS_OPTION] == ["nsfw"]
    # A job journaled before admission recorded them: its prompt as typed.
    with pytest.raises(UserError, match="`nsfw` is not installed or not allowed"):
        allowed_addons_only(RenderRequest("a <lora:nsfw:1>", seed=1), safe)


def test_a_lora_refusal_names_only_the_listed_loras_still_installed(tmp_path: Path) -> None:
    listings: list[str] = []

    def installed() -> list[str]:
        listings.append("lora")
        return ["kept", "unlisted"]

    listed = rules(lora=["kept", "gone"])
    with pytest.raises(UserError) as refused:
        plan_request(
            RenderRequest("a <lora:nsfw:1>", seed=1),
            (),
            tmp_path,
            listed,
            installed_loras=installed,
        )
    assert str(refused.value).endswith("You may use: kept.")
    # The folder is listed once for a request holding tags (each is checked installed), and
    # not at all for one holding none.
    plan_request(
        RenderRequest("a <lora:kept:1> <lora:kept:0.5>", seed=1),
        (),
        tmp_path,
        listed,
        installed_loras=installed,
    )
    plan_request(RenderRequest("a cat", seed=1), (), tmp_path, listed, installed_loras=installed)
    assert listings == ["lora", "lora"]


def test_an_unknown_lora_tag_is_refused_as_the_lora_option_refuses_it(tmp_path: Path) -> None:
    """A tag naming no installed LoRA is refused before the job is taken (and charged), in
    the words of the ``lora`` option (``addon_unavailable``: the closest the member may use
    here), not ignored by the engine after the member paid for the picture."""
    installed = ["ink-style", "watercolour"]
    with pytest.raises(UserError) as refused:
        plan_request(
            RenderRequest("a cat <lora:ink-styel:0.8>", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: installed,
        )
    option_refusal = addon_unavailable(AddonKind.LORA, "ink-styel", installed)
    assert str(refused.value) == str(option_refusal)
    assert "did you mean `ink-style`?" in str(refused.value)
    # Where the server lists LoRAs, only those it allows are named.
    with pytest.raises(UserError) as refused:
        plan_request(
            RenderRequest("a cat <lora:ink-styel:0.8>", seed=1),
            (),
            tmp_path,
            rules(lora=["watercolour"]),
            installed_loras=lambda: installed,
        )
    assert str(refused.value) == str(
        addon_unavailable(AddonKind.LORA, "ink-styel", ["watercolour"])
    )


def test_a_lora_the_engine_does_not_apply_is_not_refused(tmp_path: Path) -> None:
    safe = rules(lora=["safe"])
    faces = {"fix_faces": True, "fix_faces_prompt": "<lora:nsfw:1> a face"}
    fast = {"upscale_factor": 2, "upscale_mode": "fast"}
    for request in (
        RenderRequest("a cat", seed=1, options=faces),  # the faces pass applies the prompt's
        RenderRequest("a cat <lora:nsfw:1>", seed=1, mode="upscale", options=fast),
    ):
        planned = plan_request(request, (), tmp_path, safe)
        assert planned.options[APPLIED_LORAS_OPTION] == []
        allowed_addons_only(planned, safe)


def test_fix_faces_and_the_upscales_record_no_network_from_the_pictures_prompt(
    tmp_path: Path,
) -> None:
    # Their passes build their jobs with no LoRA and no embedding (inference.passes.faces,
    # .upscale): a picture made with a LoRA or an embedding the list leaves out now is
    # neither refused nor ended for it.
    lists = rules(lora=["safe"], embedding=["easy-negative"])
    prompt = "a cat <lora:nsfw:1>, bad-hands"
    for mode, options in (
        ("faces", {}),
        ("upscale", {"upscale_factor": 2, "upscale_mode": "fast"}),
        ("upscale", {"upscale_factor": 2, "upscale_mode": "creative"}),
    ):
        request = RenderRequest(prompt, seed=1, mode=mode, options=options)
        planned = plan_request(request, (), tmp_path, lists, ["bad-hands"])
        assert planned.options[APPLIED_LORAS_OPTION] == []
        assert planned.options[USED_EMBEDDINGS_OPTION] == []
        allowed_addons_only(planned, lists)
    # /imagine's are still recorded and checked.
    with pytest.raises(UserError, match="`nsfw` is not installed or not allowed"):
        plan_request(RenderRequest(prompt, seed=1), (), tmp_path, lists, ["bad-hands"])


def test_the_start_gate_rechecks_what_admission_filled_in_under_the_lists_of_now(
    tmp_path: Path,
) -> None:
    unit = {"module": "canny", "image": "m.png"}
    embedding = (RenderRequest("a, bad-hands"), rules(embedding=["easy-negative"]))
    controlnet = (RenderRequest("a", options={"controlnet": [unit]}), rules(controlnet=["c"]))
    # Admitted while no list of its kind was kept (journaled before the embeddings read were
    # recorded): the engine would read every embedding, give the unit any ControlNet.
    for queued, now in (embedding, controlnet):
        with pytest.raises(UserError):
            allowed_addons_only(queued, now)
        admitted = plan_request(under_addon_rules(queued, now), (), tmp_path, now, ["bad-hands"])
        allowed_addons_only(admitted, now)  # admitted now: it starts
    # Journaled before the fourteenth stop with the list of then: checked against the list of
    # now as a whole.
    wide = RenderRequest("a", options={ALLOWED_EMBEDDINGS_OPTION: ["a", "b"]})
    allowed_addons_only(wide, rules(embedding=["a", "b", "c"]))
    with pytest.raises(UserError):
        allowed_addons_only(wide, rules(embedding=["a"]))


def test_an_upscaler_the_bot_filled_in_is_refilled_at_admission_and_never_ends_a_job() -> None:
    listed = AddonRules({AddonKind.UPSCALER: frozenset({"4x-A", "4x-B"})}, "4x-A")
    narrowed = AddonRules({AddonKind.UPSCALER: frozenset({"4x-B"})}, "4x-A")
    upscale = under_addon_rules(RenderRequest("", mode="upscale", init_image="in.png"), listed)
    assert upscale.options["upscaler"] == "4x-A"
    hires = with_hires_fix(RenderRequest("a cat"), listed.upscaler_here("4x-A"))
    unlisted_upscale = RenderRequest("", mode="upscale", init_image="in.png")  # the operator's
    for queued in (upscale, under_addon_rules(hires, listed), unlisted_upscale):
        allowed_addons_only(queued, narrowed)  # the member never chose it: it runs
    # 🔄 or Remix under the narrowed list: refilled under it, not refused.
    assert under_addon_rules(upscale, narrowed).options["upscaler"] == "4x-B"
    assert under_addon_rules(hires, narrowed).options["hires_upscaler"] == LANCZOS
    # An upscaler the member named is still checked, and sending the option forges nothing.
    named = RenderRequest("", mode="upscale", init_image="in.png", options={"upscaler": "4x-A"})
    with pytest.raises(UserError, match="not allowed"):
        allowed_addons_only(under_addon_rules(named, listed), narrowed)
    forged = {**named.options, UPSCALERS_FILLED_OPTION: ["upscaler"]}
    refilled = under_addon_rules(dataclasses.replace(named, options=forged), narrowed)
    assert refilled.options["upscaler"] == "4x-B"


def test_a_list_started_or_narrowed_ends_only_the_jobs_reading_an_embedding_it_leaves_out(
    tmp_path: Path,
) -> None:
    installed = ["bad-hands", "easy-negative", "sketchy"]
    wide = rules(embedding=["bad-hands", "easy-negative"])

    def admitted(prompt: str, addon_rules: AddonRules) -> RenderRequest:
        request = under_addon_rules(RenderRequest(prompt, seed=1), addon_rules)
        return plan_request(request, (), tmp_path, addon_rules, installed)

    uses = admitted("a cat, Bad-Hands", wide)  # any letter case, as the engine reads it
    assert uses.options[USED_EMBEDDINGS_OPTION] == ["bad-hands"]
    drawn = admitted("a cat, {bad-hands|bad-hands}", ANY_ADDON)  # admitted with no list
    narrowed = rules(embedding=["easy-negative"])
    for queued in (uses, drawn):
        with pytest.raises(UserError, match="embedding the server leaves out now"):
            allowed_addons_only(queued, narrowed)
    # Jobs naming none, or only one they read as plain text, stay queued.
    for queued in (admitted("a cat", wide), admitted("a cat", ANY_ADDON)):
        allowed_addons_only(queued, narrowed)
    allowed_addons_only(admitted("a sketchy cat", wide), rules(embedding=["bad-hands"]))
    # Recorded at each admission, whatever the request held.
    forged = RenderRequest("bad-hands", seed=1, options={USED_EMBEDDINGS_OPTION: []})
    assert plan_request(forged, (), tmp_path, ANY_ADDON, installed).options[
        USED_EMBEDDINGS_OPTION
    ] == ["bad-hands"]


def test_a_picture_of_a_model_taking_no_embeddings_records_none_for_the_start_gate(
    tmp_path: Path,
) -> None:
    """SD3 and Flux read an embedding's name as words: a list dropping it ends no such job."""
    installed = ["bad-hands", "easy-negative"]
    cells = [{"model": "flux"}, {"model": "sd", "prompt": "a dog, easy-negative"}]
    comparison = RenderRequest(
        "a cat, bad-hands",
        model="flux",
        seed=1,
        count=2,
        options={COMPARE_OPTION: {"cells": cells}},
    )
    solo = RenderRequest("a cat, bad-hands", model="flux", seed=1)
    planned = [
        plan_request(request, (), tmp_path, ANY_ADDON, installed, None, ["flux"])
        for request in (comparison, solo)
    ]
    assert [plan.options[USED_EMBEDDINGS_OPTION] for plan in planned] == [["easy-negative"], []]
    allowed_addons_only(planned[1], rules(embedding=["easy-negative"]))
    # A model the bot does not know (on a worker only) may read them: recorded.
    unknown = plan_request(solo, (), tmp_path, ANY_ADDON, installed, None, ["sd3"])
    assert unknown.options[USED_EMBEDDINGS_OPTION] == ["bad-hands"]


def test_embeddings_left_out_are_plain_prompt_text_for_the_job(tmp_path: Path) -> None:
    installed = ["bad-hands", "easy-negative"]
    listed = rules(embedding=["easy-negative"])

    def admitted(request: RenderRequest, addon_rules: AddonRules) -> RenderRequest:
        request = under_addon_rules(request, addon_rules)
        return plan_request(request, (), tmp_path, addon_rules, installed)

    # An older version's copy of a list is dropped at admission: the names read are recorded.
    old = RenderRequest("a cat, bad-hands", seed=1, options={ALLOWED_EMBEDDINGS_OPTION: ["x"]})
    here = admitted(old, listed)
    assert ALLOWED_EMBEDDINGS_OPTION not in here.options
    assert here.options[USED_EMBEDDINGS_OPTION] == []
    [job] = image_jobs(here, None, [], installed)
    assert job.embeddings == ()
    anywhere = admitted(old, ANY_ADDON)
    [job] = image_jobs(anywhere, None, [], installed)
    assert job.embeddings == ("bad-hands",)
    # A job journaled before the fourteenth stop reads within the list it carries, as then.
    journaled = RenderRequest("a cat, bad-hands", seed=1, options={ALLOWED_EMBEDDINGS_OPTION: []})
    [job] = image_jobs(journaled, None, [], installed)
    assert job.embeddings == ()
    # Each picture reads its own: servers' lists no longer keep jobs out of one call.
    assert here.pipeline_key() == anywhere.pipeline_key()


def test_show_lists_each_kind_and_says_what_an_empty_list_means() -> None:
    settings = GuildSettings(1, None, "allow", {GuildList.ALLOWED_LORA: frozenset({"a", "b"})})
    shown = describe_guild(settings)
    assert "allowed LoRAs: `a`, `b` (— means every installed LoRA)" in shown
    assert "allowed ControlNets: — (— means every installed ControlNet)" in shown


def test_an_imported_add_on_the_server_leaves_out_reads_as_one_not_installed() -> None:
    installed = Installed(
        models=["tiny"],
        model_hash=lambda _: "0" * 10,
        loras=[],
        vaes=["secret-vae", "family-vae"],
        upscalers=["Lanczos", "4x-Secret"],
    )
    here = _allowed_here(installed, rules(vae=["family-vae"], upscaler=["4x-Safe"]))
    text = (
        "a cat\nSteps: 2, Seed: 1, Size: 64x64, Model: tiny, VAE: secret-vae.safetensors, "
        "Hires upscale: 2, Hires upscaler: 4x-Secret"
    )
    imported = request_from_infotext_text(text, here)
    assert imported.request.options == {"hires_scale": 2, "hires_upscaler": "Lanczos"}
    assert imported.unhonoured[:2] == [
        "VAE 'secret-vae.safetensors' is not installed here; the model's own VAE is used",
        "hires upscaler '4x-Secret' is not installed here; Lanczos is used instead",
    ]


def test_the_hires_fix_falls_back_to_lanczos_where_the_operators_upscaler_is_left_out() -> None:
    assert rules(upscaler=["4x-Safe"]).upscaler_here("4x-Other") == "Lanczos"
    assert rules(upscaler=["4x-Safe"]).upscaler_here("4X-SAFE") == "4X-SAFE"
    assert ANY_ADDON.upscaler_here("4x-Other") == "4x-Other"


def admitted_planned(request: RenderRequest, addon_rules: AddonRules) -> RenderRequest:
    """``request`` as admission leaves it: under the lists, then planned."""
    return plan_request(under_addon_rules(request, addon_rules), frozenset(), None, addon_rules)


def test_an_unknown_loras_did_you_mean_names_only_loras_the_server_allows() -> None:
    # ``filler-00`` is listed but no longer installed; the installed ``filler-01`` and
    # ``filler-02`` are left out: the engine's warning (posted with the picture) names neither.
    installed = ["filler-01", "filler-02", "filler-10"]
    request = RenderRequest("a cat <lora:filler-00:1> <lora:filler-10:1>", seed=1)
    admitted = admitted_planned(request, rules(lora=["filler-00", "filler-10"]))
    [job] = image_jobs(admitted, None, installed, [])
    assert job.warnings == ("unknown LoRA 'filler-00' ignored (did you mean filler-10?)",)
    assert [lora.name for lora in job.loras] == ["filler-10"]  # a listed LoRA still applies
    # With no list, every installed LoRA may be named; a list since emptied is forgotten.
    [anywhere] = image_jobs(admitted_planned(admitted, ANY_ADDON), None, installed, [])
    assert "did you mean filler-10, filler-02, filler-01?" in anywhere.warnings[0]


def test_a_job_records_only_the_loras_its_prompts_apply_not_the_servers_list() -> None:
    # A server listing 3,000 LoRAs: a job carries the names its prompts apply, no more, and
    # none at all where its mode applies no LoRA (/upscale, /fix-faces).
    listed = rules(lora=[f"listed-lora-number-{index:04}" for index in range(3000)])
    request = RenderRequest("a cat <lora:listed-lora-number-0007:1>", seed=1)
    assert admitted_planned(request, listed).options["loras"] == ["listed-lora-number-0007"]
    upscale = RenderRequest("a cat", seed=1, mode="upscale", init_image="in.png")
    assert "loras" not in admitted_planned(upscale, listed).options
    # Read where it is used: a string would match its substrings.
    forged = dataclasses.replace(request, options={"loras": "listed-lora-number-0007"})
    with pytest.raises(RenderInputError, match="loras option must be a list of names"):
        image_jobs(forged, None, ["listed-lora-number-0007"], [])


def test_a_hires_upscaler_the_bot_filled_in_is_chosen_again_at_each_admission() -> None:
    # Made while the list left the operator's 4x-Op out: Lanczos. 🔄 and Remix resubmit that
    # request; once the list allows 4x-Op again (or is emptied), it enlarges with 4x-Op.
    narrow = AddonRules({AddonKind.UPSCALER: frozenset({"4x-Safe"})}, hires_upscaler="4x-Op")
    hires = with_hires_fix(RenderRequest("a cat"), narrow.upscaler_here("4x-Op"))
    made = under_addon_rules(hires, narrow)
    assert made.options["hires_upscaler"] == LANCZOS
    wide = AddonRules({AddonKind.UPSCALER: frozenset({"4x-Op"})}, hires_upscaler="4x-Op")
    emptied = AddonRules({}, hires_upscaler="4x-Op")
    for now in (wide, emptied):
        again = under_addon_rules(made, now)
        assert again.options["hires_upscaler"] == "4x-Op"
        assert again.options[UPSCALERS_FILLED_OPTION] == ["hires_upscaler"]
    # One the member chose (an imported infotext) is theirs: kept, or Lanczos where left out.
    chosen = RenderRequest("a", options={"hires_scale": 2, "hires_upscaler": "4x-Safe"})
    assert under_addon_rules(chosen, narrow) is chosen


def test_a_hires_upscaler_the_bot_filled_in_whose_file_is_gone_gives_way_to_lanczos() -> None:
    # The operator's 4x-Op was removed: a 🔄 of a picture made with it enlarges with Lanczos,
    # with or without a server list, saying nothing (the member never chose it).
    made = with_hires_fix(RenderRequest("a cat"), "4x-Op")
    for listed in ({}, {AddonKind.UPSCALER: frozenset({"4x-Op"})}):
        addon_rules = AddonRules(listed, hires_upscaler="4x-Op")
        assert kinds_to_read(made, addon_rules) == [AddonKind.UPSCALER]
        gone = dataclasses.replace(addon_rules, installed={AddonKind.UPSCALER: ["4x-Other"]})
        again = under_addon_rules(made, gone)
        assert again.options["hires_upscaler"] == LANCZOS and again.notes == made.notes
        installed = dataclasses.replace(addon_rules, installed={AddonKind.UPSCALER: ["4x-op"]})
        assert under_addon_rules(made, installed).options["hires_upscaler"] == "4x-Op"


def test_a_list_of_lanczos_only_leaves_every_model_upscaler_out(tmp_path: Path) -> None:
    (tmp_path / "upscalers").mkdir()
    stand_in_checkpoint(tmp_path / "upscalers" / "4x-Model.safetensors")
    listable = listable_addons(ModelRegistry(tmp_path), AddonKind.UPSCALER)
    assert listable == [LANCZOS, *LATENT_UPSCALERS, "4x-Model"]  # what an admin may list
    lanczos_only = AddonRules({AddonKind.UPSCALER: frozenset({LANCZOS})}, "4x-Model")
    upscale = RenderRequest("", mode="upscale", init_image="in.png")
    assert under_addon_rules(upscale, lanczos_only).options["upscaler"] == LANCZOS
    named = dataclasses.replace(upscale, options={"upscaler": "4x-Model"})
    assert refusal(named, lanczos_only).endswith("You may use: Lanczos.")
    assert lanczos_only.upscaler_here("4x-Model") == LANCZOS  # the hires fix's fallback
    assert lanczos_only.usable(AddonKind.UPSCALER, [LANCZOS, "4x-Model"]) == [LANCZOS]
    # A latent upscaler only enlarges a hires fix's latents: never an upscale's default.
    latent_only = rules(upscaler=["Latent (bicubic)"])
    assert under_addon_rules(upscale, latent_only).options["upscaler"] == LANCZOS
    hires = RenderRequest("a", options={"hires_scale": 2, "hires_upscaler": "Latent (bicubic)"})
    assert under_addon_rules(hires, latent_only) is hires


def test_requests_with_other_hires_passes_never_share_a_pipeline_call() -> None:
    # The first request stands for the batch: a job admitted with Lanczos (its server leaves
    # the operator's upscaler out) must not be enlarged with another's.
    base = RenderRequest("a", options={"hires_scale": 2, "hires_upscaler": "4x-Op"})
    for option, value in (
        ("hires_upscaler", LANCZOS),
        ("hires_steps", 5),
        ("hires_denoising", 0.4),
    ):
        other = dataclasses.replace(base, options={**base.options, option: value})
        assert other.pipeline_key() != base.pipeline_key(), option


def test_the_compare_model_axis_refuses_in_the_one_sentence_within_a_message() -> None:
    models = [f"checkpoint-model-number-{index:03}-v2" for index in range(300)]
    with pytest.raises(UserError) as refused:
        parse_axis(Axis.MODEL, "checkpoint-model-number-15-v2", "a cat", 50, models)
    said = str(refused.value)
    assert said.startswith("The model `checkpoint-model-number-15-v2` is not installed or not")
    assert refused.value.reason is Reason.MODEL and len(said) < 700
    assert said.endswith("and 290 more (`/models` lists them all).")


def test_a_wildcard_line_naming_a_lora_not_installed_is_ignored_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the tags the member typed are refused: a wildcard file's line drawn at some seeds
    and not others must not refuse those draws; its tag is ignored (the engine tells the
    member with the picture) and the operator is warned of the file."""
    (tmp_path / "style.txt").write_text("oil painting\n<lora:film-grain:0.6> photo\n")
    installed = ["ink-style"]
    with caplog.at_level("WARNING", logger="bot.policy.prompt_safety"):
        for seed in range(12):
            planned = plan_request(
                RenderRequest("a cat, __style__", seed=seed),
                (),
                tmp_path,
                installed_loras=lambda: installed,
            )
            assert planned.options[APPLIED_LORAS_OPTION] == []
    warned = [record.getMessage() for record in caplog.records]
    assert warned and all("'film-grain'" in line and "style.txt" in line for line in warned)
    # The bot's planner keeps what it warned of: one warning for the file, not one per plan.
    caplog.clear()
    warnings = OperatorWarnings()
    with caplog.at_level("WARNING", logger="bot.policy.prompt_safety"):
        for seed in range(12):
            plan_request(
                RenderRequest("a cat, __style__", seed=seed),
                (),
                tmp_path,
                installed_loras=lambda: installed,
                warned=warnings,
            )
    assert [record.getMessage() for record in caplog.records] == [warned[0]]
    assert warnings.lately(("lora file", "style.txt"))
    # Typed, the same tag is refused before anything is charged.
    with pytest.raises(UserError, match="film-grain"):
        plan_request(
            RenderRequest("a cat, <lora:film-grain:0.6>", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: installed,
        )

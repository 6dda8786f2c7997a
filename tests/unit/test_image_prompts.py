"""Image prompts without torch: reading and checking ``options["ipadapter"]``, the ``--sref``
flags and picture URLs, the installed adapters, the batch key, and the pictures travelling
over the broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.jobs.broker.wire import ALL_PICTURES, picture_paths, with_picture_paths
from bot.policy.visibility import (
    NOT_FROM_DISCORD,
    OUTSIDE_THIS_DM,
    AttachmentLocation,
    Place,
    locate_attachment,
)
from bot.requests import ImagineOptions, RequestError, build_request, style_reference_flags
from bot.user_errors import UserError
from inference.image_prompts import (
    ImagePrompt,
    check_image_prompt_models,
    image_prompt,
    image_prompt_infotext,
    with_image_prompt,
)
from inference.prompts import InlineFlagError, parse_inline_flags
from inference.registry import ModelRegistry
from inference.types import RenderInputError, RenderRequest
from tests.support.checkpoint_files import stand_in_checkpoint


def test_an_image_prompt_is_read_and_checked() -> None:
    assert image_prompt({}) is None
    read = image_prompt({"ipadapter": {"images": ["a.png", "b.png"], "weight": 1}})
    assert read == ImagePrompt(("a.png", "b.png"), 1.0, "auto", None)
    bad: list[tuple[Any, str]] = [
        ("a.png", "an image prompt must be a mapping"),
        ({"images": []}, "an image prompt takes 1 to 5 pictures"),
        ({"images": ["a.png"] * 6}, "an image prompt takes 1 to 5 pictures"),
        ({"images": [3]}, "an image prompt takes 1 to 5 pictures"),
        ({"images": ["a.png"], "weight": 2.5}, "strength must be between 0 and 2, got 2.5"),
        ({"images": ["a.png"], "weight": True}, "strength must be a number"),
        ({"images": ["a.png"], "mode": "layout"}, "unknown image prompt mode 'layout'"),
    ]
    for raw, message in bad:
        with pytest.raises(RenderInputError, match=message):
            image_prompt({"ipadapter": raw})


def test_a_different_image_prompt_is_another_batch() -> None:
    plain = RenderRequest("a cat", seed=1)
    red = with_image_prompt(plain, ImagePrompt(("red.png",)))
    assert red.batch_key() != plain.batch_key()
    assert red.batch_key() != with_image_prompt(plain, ImagePrompt(("blue.png",))).batch_key()
    assert red.batch_key() != with_image_prompt(plain, ImagePrompt(("red.png",), 1.0)).batch_key()
    assert red.batch_key() == with_image_prompt(plain, ImagePrompt(("red.png",))).batch_key()


@given(st.floats(min_value=0, max_value=2, allow_nan=False))
def test_sref_strength_flag_in_range(strength: float) -> None:
    _, flags = parse_inline_flags(f"a cat --sref 123456789012345678 --sref-strength {strength!r}")
    assert flags.sref == "123456789012345678" and flags.sref_strength == strength


@given(st.one_of(st.floats(min_value=2.0001, max_value=1e9), st.just(-1.0), st.just(float("nan"))))
def test_sref_strength_flag_out_of_range(strength: float) -> None:
    with pytest.raises(InlineFlagError, match=r"--sref-strength W with W between 0 and 2"):
        parse_inline_flags(f"a cat --sref-strength {strength!r}")


def test_sref_outside_imagine_is_a_note() -> None:
    options = ImagineOptions(prompt="a cat --sref 123456789012345678 --sref-strength 1")
    assert style_reference_flags(options) == ("123456789012345678", 1.0)
    request = build_request(options)
    assert request.prompt == "a cat"
    assert "--sref is for /imagine only; it was not applied" in request.notes
    with pytest.raises(RequestError, match="prompt is empty"):
        build_request(ImagineOptions(prompt="--seed 3"))
    assert build_request(ImagineOptions(prompt="--seed 3", prompt_optional=True)).prompt == ""


def test_missing_adapter_or_encoder_is_named(tmp_path: Path) -> None:
    prompt = ImagePrompt(("a.png",))
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RenderInputError) as refused:
        check_image_prompt_models(prompt, registry)
    assert str(refused.value) == "IP-Adapter is not installed on this server: ask an admin"
    stand_in_checkpoint(tmp_path / "ipadapter" / "style.safetensors")
    with pytest.raises(RenderInputError) as refused:
        check_image_prompt_models(prompt, registry)
    assert str(refused.value) == (
        "the IP-Adapter style's image encoder is not installed on this server: ask an admin"
    )
    with pytest.raises(RenderInputError, match="unknown IP-Adapter 'other'; available: style"):
        check_image_prompt_models(ImagePrompt(("a.png",), model="other"), registry)
    (tmp_path / "ipadapter" / "image_encoder").mkdir()
    (tmp_path / "ipadapter" / "image_encoder" / "config.json").write_text("{}")
    # Its weights too: a model folder with only its config is a copy still under way.
    stand_in_checkpoint(tmp_path / "ipadapter" / "image_encoder" / "model.safetensors")
    check_image_prompt_models(prompt, registry)


def test_infotext_names_every_input() -> None:
    assert image_prompt_infotext("style [0123abcd]", 0.6, "full", 1) == {
        "IP-Adapter": "style [0123abcd]",
        "IP-Adapter weight": "0.6",
        "IP-Adapter mode": "full",
    }
    assert image_prompt_infotext("style [0123abcd]", 1.0, "style", 3)["IP-Adapter images"] == "3"


def test_image_prompt_pictures_travel_over_the_broker() -> None:
    request = with_image_prompt(
        RenderRequest("a cat", init_image="in.png", mode="img2img"),
        ImagePrompt(("one.png", "two.png"), 0.5),
    )
    paths = picture_paths(request)
    assert paths == {
        "init_image": "in.png",
        "image_prompt_0": "one.png",
        "image_prompt_1": "two.png",
    }
    assert set(paths) <= set(ALL_PICTURES)
    # The worker names the files it wrote; a message naming none leaves no path behind.
    moved = with_picture_paths(request, {name: f"/worker/{name}.png" for name in paths})
    assert image_prompt(moved.options) == ImagePrompt(
        ("/worker/image_prompt_0.png", "/worker/image_prompt_1.png"), 0.5
    )
    assert picture_paths(with_picture_paths(request, {})) == {}


CDN = "https://cdn.discordapp.com"


def test_a_picture_url_is_read_only_from_discord_and_this_dm() -> None:
    in_server = Place(guild_id=1, channel_id=10)
    signed = f"{CDN}/attachments/22/33/style.png?ex=6&is=7&hm=abc"
    assert locate_attachment(signed, in_server, (CDN,)) == AttachmentLocation(22, "style.png")
    # Message links and ids are not picture URLs: the caller reads them as messages.
    for reference in ("https://discord.com/channels/1/22/333333333333333333", "333333333333333"):
        assert locate_attachment(reference, in_server, (CDN,)) is None
    with pytest.raises(UserError, match=NOT_FROM_DISCORD):
        locate_attachment("http://169.254.169.254/attachments/22/33/a.png", in_server, (CDN,))
    in_dm = Place(guild_id=None, channel_id=22)
    assert locate_attachment(signed, in_dm, (CDN,)) == AttachmentLocation(22, "style.png")
    with pytest.raises(UserError, match=OUTSIDE_THIS_DM):
        locate_attachment(signed, Place(guild_id=None, channel_id=23), (CDN,))


@given(st.text())
def test_any_reference_is_a_location_none_or_one_sentence(reference: str) -> None:
    try:
        location = locate_attachment(reference, Place(guild_id=1, channel_id=10), (CDN,))
    except UserError as error:
        assert str(error) == NOT_FROM_DISCORD
    else:
        assert location is None or location.channel_id >= 0

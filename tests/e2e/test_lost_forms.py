"""Easel's forms (Remix, Vary (Region) in words, Use as control) opened before a restart, or
left open past their time, and submitted after: no form in the process takes the submit, so
Easel answers it privately at once, says to open the form again, and gives back what the member
typed (Discord would otherwise show only "Something went wrong" and lose it). A live form's
submit is answered by that form alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import cogs.forms
from bot.settings import Settings
from cogs.common import quoted
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import StartEasel, imagine, modal_fields
from tests.e2e.test_controlnet import edges_png
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage

GONE = "it was opened before Easel restarted"
# Markdown, a mention and a link: given back as typed, never as formatting or a ping.
REMIX_PROMPT = "a **bold** harbour <@&1> at `dusk` https://example.com/x"


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, region_models_dir: Path
) -> Settings:
    """CLIPSeg installed and no web page: Vary (Region) opens its words form at once."""
    return easel_settings(fake_discord, tmp_path / "data", region_models_dir)


async def answer_to(submitted: InteractionHandle) -> StoredMessage:
    answer = await submitted.wait_for_original(lambda m: not m.is_loading)
    assert submitted.ack_latency is not None and submitted.ack_latency < 3
    assert submitted.error_codes == []
    return answer


async def test_forms_opened_before_a_restart_are_answered_with_what_was_typed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    posted = await fake.post_user_message(
        "edges", user=fake.owner_id, attachments=[("edges.png", edges_png())]
    )
    async with start_easel():
        result = await imagine(fake, "a quiet harbour")
        remix = await fake.click(result, label="Remix")
        remix_fields = modal_fields(await remix.wait_for_modal())
        region = await fake.click(result, label="Vary (Region)")
        region_fields = modal_fields(await region.wait_for_modal())
        control = await fake.invoke_message_command("Use as control", posted)
        control_fields = modal_fields(await control.wait_for_modal())

        # While Easel runs, the form's own answer (a refusal here) is the only one.
        values = dict(remix_fields.values())
        steps_id = remix_fields["Steps, CFG scale"][0]
        refused = await fake.submit_modal(remix, {**values, steps_id: "many, 7"})
        assert GONE not in (await answer_to(refused)).content

    async with start_easel() as bot:
        prompt_id = remix_fields["Prompt (inline flags such as --ar work)"][0]
        submitted = await fake.submit_modal(remix, {**values, prompt_id: REMIX_PROMPT})
        told = await answer_to(submitted)
        assert told.is_ephemeral and GONE in told.content
        assert quoted(REMIX_PROMPT, 2000) in told.content
        assert "`" not in told.content.replace("\\`", "")  # no code span opened by the prompt
        assert values[remix_fields["Size (WxH, W:H or auto), sampler"][0]] in told.content

        words_id = region_fields["What to repaint (e.g. the sky)"][0]
        submitted = await fake.submit_modal(region, {words_id: "the sky"})
        told = await answer_to(submitted)
        assert told.is_ephemeral and GONE in told.content and "the sky" in told.content

        control_values = dict(control_fields.values())
        control_prompt_id = control_fields["Prompt (inline flags such as --ar work)"][0]
        submitted = await fake.submit_modal(
            control, {**control_values, control_prompt_id: "a ring of light"}
        )
        told = await answer_to(submitted)
        assert told.is_ephemeral and GONE in told.content and "a ring of light" in told.content

        assert bot.queue.queued_count() == 0


async def test_a_form_left_open_past_its_time_is_answered(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """discord.py drops a form once its timeout passes; its later submit is answered too."""
    monkeypatch.setattr(cogs.forms, "FORM_TIMEOUT_S", 0.2)
    fake = fake_discord
    async with start_easel():
        result = await imagine(fake, "a quiet harbour")
        remix = await fake.click(result, label="Remix")
        fields = dict(modal_fields(await remix.wait_for_modal()).values())
        await asyncio.sleep(0.5)
        told = await answer_to(await fake.submit_modal(remix, fields))
        assert told.is_ephemeral and GONE in told.content and "a quiet harbour" in told.content

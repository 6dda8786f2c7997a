"""A minimal discord.py bot exercising what Easel's cogs will do, for the fake's self-tests."""

from __future__ import annotations

import asyncio
import io
import re
from collections import defaultdict
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image

OVERLONG_CUSTOM_ID = "x" * 150
OUTCOME_WAIT_S = 5.0


def make_png(width: int, height: int, color: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"reroll:(?P<seed>[0-9]+)"
):
    """A persistent button whose state lives in its custom_id, so it survives restarts."""

    def __init__(self, seed: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll", style=discord.ButtonStyle.primary, custom_id=f"reroll:{seed}"
            )
        )
        self.seed = seed

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
    ) -> RerollButton:
        return cls(int(match["seed"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"rerolled {self.seed + 1}")


class PromptModal(discord.ui.Modal, title="Your prompt"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(label="Prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"prompt was {self.prompt.value}")


class CounterView(discord.ui.View):
    count = 0

    @discord.ui.button(label="+1", custom_id="counter:add")
    async def add(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        self.count += 1
        await interaction.response.edit_message(content=f"count {self.count}")


class StudioBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.release_slow = asyncio.Event()
        self.outcomes: dict[str, BaseException | str] = {}
        self._outcome_recorded: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.autocomplete_choice_count = 3
        self.tree.on_error = self._remember_error  # type: ignore[method-assign]
        self._add_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(RerollButton)
        await self.tree.sync()

    async def _remember_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        name = interaction.command.name if interaction.command else "?"
        self.record_outcome(name, error.__cause__ or error)

    def record_outcome(self, command: str, outcome: BaseException | str) -> None:
        self.outcomes[command] = outcome
        self._outcome_recorded[command].set()

    async def wait_for_outcome(self, command: str) -> BaseException | str:
        """What the command ended with: its error, or the word it records on success."""
        await asyncio.wait_for(self._outcome_recorded[command].wait(), OUTCOME_WAIT_S)
        return self.outcomes[command]

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(name="render", description="Render a picture")
        @app_commands.describe(prompt="what to draw", seed="the noise seed")
        async def render(
            interaction: discord.Interaction, prompt: str, seed: app_commands.Range[int, 0, 99] = 1
        ) -> None:
            await interaction.response.defer(thinking=True)
            view = discord.ui.View(timeout=None)
            view.add_item(RerollButton(seed))
            picture = discord.File(io.BytesIO(make_png(8, 4)), filename="result.png")
            await interaction.edit_original_response(
                content=f"done: {prompt}", attachments=[picture], view=view
            )

        @tree.command(name="slow", description="Answers when the test says so")
        async def slow(interaction: discord.Interaction) -> None:
            await self.release_slow.wait()
            await interaction.response.send_message("finally")
            self.record_outcome("slow", "answered")

        @tree.command(name="twice", description="Answers twice")
        async def twice(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("first follow-up")
            # Bypasses discord.py's own guard to put a second initial response on the wire.
            interaction.response._response_type = None
            await interaction.response.send_message("second initial response")

        @tree.command(name="deferred_edit", description="Defers, then edits when released")
        async def deferred_edit(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.release_slow.wait()
            await interaction.edit_original_response(content="late edit")
            self.record_outcome("deferred_edit", "edited")

        @tree.command(name="badview", description="Sends an invalid view")
        async def badview(interaction: discord.Interaction) -> None:
            view = discord.ui.View()
            view.add_item(discord.ui.Button(label="bad", custom_id=OVERLONG_CUSTOM_ID))
            await interaction.response.send_message("look", view=view)

        @tree.command(name="silent", description="Answers with an empty message")
        async def silent(interaction: discord.Interaction) -> None:
            await interaction.response.send_message()

        @tree.command(name="bigfile", description="Sends a file of the given size")
        async def bigfile(interaction: discord.Interaction, size: int) -> None:
            blob = discord.File(io.BytesIO(b"\0" * size), filename="blob.bin")
            await interaction.response.send_message(file=blob)
            self.record_outcome("bigfile", "sent")

        @tree.command(name="upscale", description="Reads an uploaded image")
        async def upscale(interaction: discord.Interaction, image: discord.Attachment) -> None:
            data = await image.read()
            await interaction.response.send_message(
                f"{image.filename} {image.width}x{image.height} {len(data)} bytes", ephemeral=True
            )

        admin = app_commands.Group(name="admin", description="Administration")
        config = app_commands.Group(name="config", description="Settings", parent=admin)

        @config.command(name="set", description="Set a setting")
        async def config_set(interaction: discord.Interaction, key: str, value: str) -> None:
            await interaction.response.send_message(f"{key}={value}")

        tree.add_command(admin)

        @tree.command(name="survey", description="Asks for a prompt in a modal")
        async def survey(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal())

        @tree.command(name="counter", description="A message whose button edits it")
        async def counter(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("count 0", view=CounterView())

        @tree.command(name="pick", description="Pick a model")
        async def pick(interaction: discord.Interaction, model: str) -> None:
            await interaction.response.send_message(model)

        @pick.autocomplete("model")
        async def pick_model(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            names = [f"{current}-model-{i}" for i in range(self.autocomplete_choice_count)]
            return [app_commands.Choice(name=n, value=n) for n in names]

        @tree.command(name="whereami", description="Where the command ran and who may do what")
        async def whereami(interaction: discord.Interaction, channel_id: str = "") -> None:
            # Permissions as Discord sent them, and as discord.py computes them from its cache.
            place = "dm" if interaction.guild_id is None else f"guild={interaction.guild_id}"
            report = [
                place,
                f"view={interaction.permissions.view_channel}",
                f"app_view={interaction.app_permissions.view_channel}",
            ]
            guild = interaction.guild
            if channel_id and guild is not None and isinstance(interaction.user, discord.Member):
                channel = guild.get_channel(int(channel_id))
                assert channel is not None, f"channel {channel_id} is not in the cache"
                cached = channel.permissions_for(interaction.user)
                report.append(f"cached_view={cached.view_channel}")
            await interaction.response.send_message(" ".join(report), ephemeral=True)

        @tree.command(name="threadcheck", description="The thread the command ran in")
        async def threadcheck(interaction: discord.Interaction, user_id: str) -> None:
            # The thread from the interaction, the bot's cache, and its members from REST.
            thread = interaction.channel
            assert isinstance(thread, discord.Thread), f"not run in a thread: {thread!r}"
            cached = interaction.guild is not None and interaction.guild.get_thread(thread.id)
            try:
                member = await thread.fetch_member(int(user_id))
                answer = f"member since {member.joined_at.year}"
            except discord.HTTPException as error:
                answer = f"{error.status} {error.code}"
            await interaction.response.send_message(
                f"type={thread.type.value} parent={thread.parent_id} cached={bool(cached)} "
                f"nsfw={thread.is_nsfw()} {answer}",
                ephemeral=True,
            )

        @tree.command(name="peek", description="Fetches a message with the bot's rights")
        async def peek(interaction: discord.Interaction, channel_id: str, message_id: str) -> None:
            await interaction.response.defer(ephemeral=True)
            channel = self.get_partial_messageable(int(channel_id))
            try:
                message = await channel.fetch_message(int(message_id))
            except discord.HTTPException as error:
                await interaction.followup.send(f"{error.status} {error.code}")
                return
            await interaction.followup.send(f"read: {message.content}")

        @tree.command(name="serveronly", description="Only offered in servers")
        @app_commands.guild_only()
        async def serveronly(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("in a server")

        @tree.context_menu(name="Describe")
        async def describe(interaction: discord.Interaction, message: discord.Message) -> None:
            sizes = [len(await a.read()) for a in message.attachments]
            await interaction.response.send_message(f"{len(sizes)} attachment(s), {sizes} bytes")

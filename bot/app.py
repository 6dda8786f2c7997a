"""The composition root: settings in, a running bot out. Nothing else wires parts together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import aiohttp
import aiosqlite
import discord
from discord import app_commands
from discord.ext import commands

from bot import metrics
from bot.acknowledge_first import AcknowledgeFirst
from bot.bans import MemberStops
from bot.discord_endpoints import point_discord_at
from bot.engines import engine_factory_for
from bot.event_loop import describe as describe_loop
from bot.gateway_health import GatewayHealth
from bot.jobs.queue import JobQueue, RenderSlot
from bot.jobs.retention import connect_making_room
from bot.lenient_json import loads_replacing_lone_surrogates
from bot.logging_setup import install_logging
from bot.process_end import (
    STOP_SIGNALS,
    EarlyStop,
    end_at_once,
    exit_now,
    status_after_stop,
)
from bot.redaction import redact_url
from bot.restores import (
    RunFileKeeper,
    refuse_pictures_without_database,
    take_run_mark,
    tidy_restore_copies,
)
from bot.services import Services
from bot.settings import Settings, SettingsError, warn_of_unknown_settings
from bot.single_instance import DataDirLock, hold_data_dir
from bot.web.dashboard import Dashboard
from bot.web.links import LinkSigner, load_secret
from bot.web.server import RegionWebServer
from cogs.admin import AdminCog, DiscordServerAdmins
from cogs.bans import BansCog
from cogs.blend import BlendCog
from cogs.compare import CompareCog
from cogs.contexts import EaselCommandTree, command_contexts
from cogs.control_menu import ControlMenuCog
from cogs.describe import DescribeCog, ImagineSuggestionButton
from cogs.edit import EditCog
from cogs.errors import on_app_command_error
from cogs.forms import answer_lost_form
from cogs.history import HistoryCog, HistoryPageButton
from cogs.imagine import ImagineCog
from cogs.info import InfoCog
from cogs.jobs import JobsCog
from cogs.lists import ListsCog, PageButton
from cogs.moderation import MemberJobsPageButton, ModerationCog
from cogs.region import RegionOffers, WordsButton
from cogs.results.buttons import RESULT_BUTTONS
from cogs.results.posting import DiscordResults
from cogs.servers import AllowedServersCog
from cogs.settings import PresetsCog, SettingsCog
from cogs.use_settings import UseSettingsCog
from cogs.withdrawals import WithdrawalsCog, thread_parent
from db.database import close as close_database
from db.database import schema_version
from inference.describe import captioner_problem
from inference.device_loss import DEVICE_LOST_EXIT_STATUS
from inference.registry import pickles_left_out
from inference.worker import DeviceWorker, EngineFactory

if TYPE_CHECKING:  # nats-py is the optional [distributed] extra
    from bot.jobs.broker.client import BrokerClient

log = logging.getLogger(__name__)

# SIGTERM stops Easel within 30 s (the contract; docker-compose's stop_grace_period is 40 s).
# The stop's clock: each phase waits its own grace or what is left of this budget, less
# CLOSING_RESERVE_S kept for the closes after the waits (Discord's session, the broker, the
# database), whichever is shorter; what a cut phase had in hand stays journaled.
STOP_BUDGET_S = 28.0
CLOSING_RESERVE_S = 2.0
# How long a stop waits, twice, for commands and clicks being handled (they journal jobs).
HANDLER_GRACE_S = 5.0
# The names discord.py 2.x gives the tasks running app commands and component callbacks, and
# the event listeners that write to the database (withdrawals, bans, kicks, timeouts).
_HANDLER_TASK_PREFIXES = (
    "CommandTree-invoker",
    "discord-ui-",
    "discord.py: on_raw_message_delete",
    "discord.py: on_raw_bulk_message_delete",
    "discord.py: on_member_ban",
    "discord.py: on_audit_log_entry_create",
)
# What README's "Creating the Discord application" asks for, and what the invite link logged at
# start asks for. View Audit Log: kicks and timeouts are heard only through the audit log.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    attach_files=True,
    embed_links=True,
    read_message_history=True,
    view_audit_log=True,
)
# Discord unreachable at start (a reboot before the network is up, an outage): the login is
# tried again, after waits doubling from the first to the last, for as long as it takes.
LOGIN_RETRY_FIRST_S = 1.0
LOGIN_RETRY_LONGEST_S = 60.0
# In EASEL_DATA_DIR: the server that commands were last registered to alone (EASEL_DEV_GUILD_ID),
# so that server's copies are removed once the setting is gone or names another server.
DEV_GUILD_MARKER = "dev-guild-commands"


# The gateway's close for a token it refuses: reset by the operator while Easel runs.
GATEWAY_AUTHENTICATION_FAILED = 4004


def _token_refused() -> SettingsError:
    """What ends a start, or a run, whose DISCORD_TOKEN Discord refuses (wrong, or reset)."""
    return SettingsError(
        "DISCORD_TOKEN was refused by Discord: copy the bot's token again from the "
        "Developer Portal (Bot tab, Reset Token) into .env"
    )


# The longest reason /healthz, `easel health` and the log give for a failed login.
UNREACHABLE_REASON_CHARS = 200


def _unreachable_because(error: Exception) -> str:
    """Why a login failed, in one short line: an HTTP answer's status and reason (its body
    may be a proxy's HTML page), else the error's first line, cut."""
    if isinstance(error, discord.HTTPException):
        return f"{error.status} {error.response.reason}"
    why = (str(error).strip() or type(error).__name__).splitlines()[0]
    if len(why) > UNREACHABLE_REASON_CHARS:
        return why[: UNREACHABLE_REASON_CHARS - 1] + "…"
    return why


class EaselBot(commands.Bot):
    queue: JobQueue
    services: Services
    results: DiscordResults
    region_offer: RegionOffers

    def __init__(self, settings: Settings, engine_factory: EngineFactory | None = None) -> None:
        # Easel never joins voice: discord.py's warnings about missing voice libraries are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.none()
        intents.guilds = True
        # Not privileged: message deletions, so a result a moderator deleted is withdrawn
        # (cogs.withdrawals). Members' messages are neither read nor kept (no message cache).
        intents.guild_messages = True
        # Not privileged: bans, and (with View Audit Log) kicks and timeouts, so the member's
        # unfinished jobs there stop (cogs.bans).
        intents.moderation = True
        # Told of each command as it arrives (EaselCommandTree) and of each first answer (the
        # HTTP trace): the work after an acknowledgement lets earlier ones go first.
        self.acknowledge_first = AcknowledgeFirst()
        # Easel needs no complete guild cache to serve interactions: be ready without waiting.
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            guild_ready_timeout=0.1,
            max_messages=None,
            # Commands work in servers; in direct messages only when the operator allows it.
            tree_cls=EaselCommandTree,
            allowed_contexts=command_contexts(allow_dms=settings.allow_dms),
            # Installed to servers only: Discord itself refuses a member's own install (a
            # server's commands that Easel, not in that server, could not answer there).
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
            # Members' text (prompts, notes, errors) is quoted everywhere: nothing Easel sends
            # notifies anyone but the members a message names explicitly (a result's maker).
            allowed_mentions=discord.AllowedMentions.none(),
            # Counts Discord's error answers and 429s, and times each interaction's ack.
            http_trace=metrics.discord_http_trace(
                answered=self.acknowledge_first.answered,
                lost=self.acknowledge_first.answer_lost,
            ),
        )
        self.settings = settings
        self._engine_factory = engine_factory or engine_factory_for(settings)
        self._db: aiosqlite.Connection | None = None
        self._broker: BrokerClient | None = None
        self._run_file: RunFileKeeper | None = None
        self._devices: list[DeviceWorker] = []  # this process's own device threads
        self._shutdown: asyncio.Task[None] | None = None
        self._pruning: asyncio.Task[None] | None = None
        self._reading_ahead: asyncio.Task[None] | None = None
        self.metrics_server: metrics.MetricsServer | None = None
        # False until setup_hook has finished: a stop before then cancels it (see run).
        self.is_set_up = False
        self._setting_up = False  # setup_hook has begun: its failures are not the login's
        # Why the login is being tried again (``login``), for /healthz; None once it passed.
        self._waiting_for_discord: str | None = None
        # Whether the gateway is connected (``on_connect``...), for /healthz and /metrics.
        self._gateway = GatewayHealth()
        # What `easel run` exits with after its stop (``DEVICE_LOST_EXIT_STATUS``).
        self.exit_status = 0
        # Discord refused the token while running (``_token_taken``): `easel run` ends as a
        # start with it does.
        self.token_refused = False

    async def login(self, token: str) -> None:
        """discord.py's login, then setup_hook; while Discord cannot be reached, tried again
        (a stop meanwhile cancels the wait), and /healthz, served from the first try on,
        answers 503 "waiting for Discord: why". A refused token ends the start at once."""
        if (endpoint := self.settings.metrics_endpoint) is not None and self.metrics_server is None:
            # Up first, so a health check sees "starting" or why not yet (503) rather than nothing.
            self.metrics_server = await metrics.serve(
                *endpoint,
                healthy=lambda: self.is_ready() and not self.is_closed(),
                trouble=self._health_trouble,
            )
        wait = LOGIN_RETRY_FIRST_S
        self._waiting_for_discord = "waiting for Discord: connecting"  # the first try may hang
        while True:
            try:
                await super().login(token)
                return
            except discord.LoginFailure:
                raise _token_refused() from None
            except (
                aiohttp.ClientConnectionError,
                discord.DiscordServerError,
                TimeoutError,
            ) as error:
                if self._setting_up:
                    raise
                why = _unreachable_because(error)
                self._waiting_for_discord = f"waiting for Discord: {why}"
                log.warning("Discord unreachable (%s); retrying in %.0f s", why, wait)
            # The session closes its connector: static_login makes both again.
            await self.http.close()
            self.http.connector = discord.utils.MISSING
            await asyncio.sleep(wait)
            wait = min(wait * 2, LOGIN_RETRY_LONGEST_S)

    def _health_trouble(self) -> str | None:
        """/healthz's 503 line beyond "starting or stopping": Discord not reached yet, its
        gateway disconnected past the grace (``GatewayHealth``), or a device lost."""
        if self._waiting_for_discord is not None:
            return self._waiting_for_discord
        if (gateway := self._gateway.trouble()) is not None:
            return gateway
        return self.queue.device_trouble() if hasattr(self, "queue") else None

    # discord.py dispatches "connect" on each READY, "resumed" on each RESUMED, and
    # "disconnect" on each drop and each failed reconnect (``cogs.withdrawals`` hears them too).
    async def on_connect(self) -> None:
        self._gateway.connected()

    async def on_resumed(self) -> None:
        self._gateway.connected()

    async def on_disconnect(self) -> None:
        self._gateway.disconnected()

    async def on_message(self, message: discord.Message, /) -> None:
        """Easel has no text commands: messages arrive for their deletions alone."""

    async def setup_hook(self) -> None:
        self._setting_up = True
        self._waiting_for_discord = None  # logged in
        settings = self.settings
        # Pictures put back before their database: a new one's first sweep would delete them.
        await asyncio.to_thread(
            refuse_pictures_without_database,
            settings.database_path,
            (settings.images_dir, settings.inputs_dir),
        )
        # On a full disk, what is past the retention goes before the first write to the journal.
        self._db, retention = await connect_making_room(
            settings.database_path,
            settings.images_dir,
            settings.inputs_dir,
            settings.retention_days,
        )
        # Before the queue reads the journal: a database put back from a backup renders and
        # posts none of the jobs it held unfinished again (nor does a worker of the broker).
        await take_run_mark(
            self._db, settings.data_dir, time.time(), settles_copies=bool(settings.queue_url)
        )
        # And one taken during this run and put back by hand, once a job ended after it.
        self._run_file = RunFileKeeper(self._db, settings.data_dir)
        await self._run_file.start()
        metrics.watch_data_dir(settings.data_dir)
        slots = await self._render_slots()  # opens the broker, when there is one
        self.queue = JobQueue(
            self._db,
            slots,
            settings.images_dir,
            dm_limits=settings.dm_limits,
            copies=self._broker,
            max_queued_per_member=settings.max_queued_per_member,
            priority_servers=settings.priority_servers,
            serves_server=settings.serves_server,
            fairness=settings.fairness,
        )
        self.queue.set_no_device_left(self._stop_for_lost_devices)
        self.queue.set_token_check(self._token_taken)
        self.results = DiscordResults(self)
        self.queue.set_sink(self.results)
        # A job the rules of now would withhold is ended before it uses GPU time (refunded);
        # one withheld at delivery for a rule changed since its submit is refunded then.
        self.queue.set_start_gate(self.results, first_wait=self.results.servers_known)
        self.results.refund_withheld = self.queue.refund_withheld
        self.queue.set_progress_listener(self.results.progress, self.results.stopped_in_batch)
        job_size = None if self._broker is None else self._broker.max_job_bytes
        self.services = Services.build(
            self._db, settings, copies=self._broker, max_job_bytes=job_size
        )
        self.results.member_settings = self.services.member_settings
        self.results.guild_policy = self.services.guild_policy
        self.results.stopped_members = self.services.stopped_members
        self.results.removed_from = self.removed_from
        self.results.serves_server = settings.serves_server
        self.results.history = self.services.history
        # A moderator's deletion stops what was being made from the picture (refunded).
        self.services.history.stop_withdrawn = self.queue.stop_withdrawn
        # A deletion's audit row is Easel's unless a Delete click made it: Discord does not say
        # which moderator deleted a message.
        assert self.user is not None  # setup_hook runs once logged in
        self.services.history.easel_id = self.user.id
        # A post in a thread goes with the thread's channel, archived or not.
        self.services.history.thread_parent = lambda channel_id: thread_parent(self, channel_id)
        # Before the queue renders and members are served: what a database put back from a
        # backup holds of members who ran /forget-me since it was taken goes again.
        await self.services.history.forget_again()
        self.tree.on_error = on_app_command_error  # type: ignore[method-assign]
        # A form opened before a restart (or left open too long) is answered, not left silent.
        self.add_listener(answer_lost_form, "on_interaction")
        await self.add_cog(ImagineCog())
        await self.add_cog(InfoCog(self))
        history = HistoryCog(self.services.history)
        await self.add_cog(history)
        self.services.history.posts_left_to_delete = history.delete_pending_now
        await self.add_cog(SettingsCog(self.services.member_settings))
        await self.add_cog(PresetsCog())
        admin = AdminCog(self.services.guild_policy, self.services.presets)
        await self.add_cog(admin)
        await self.add_cog(ModerationCog())
        admins = DiscordServerAdmins(self, self.services.thread_members)
        await self.add_cog(EditCog(self))
        await self.add_cog(JobsCog())
        await self.add_cog(ListsCog())
        await self.add_cog(CompareCog())
        await self.add_cog(BlendCog())
        await self.add_cog(DescribeCog(settings.captioner_dir))
        await self.add_cog(UseSettingsCog(self))
        await self.add_cog(ControlMenuCog(self))
        await self.add_cog(
            WithdrawalsCog(
                self.services.history,
                admins.forget_channel,
                self.services.unheard_deletions,
            )
        )
        self.member_stops = MemberStops(
            self._db, self.queue, self.services.history, self.services.stopped_members
        )
        bans = BansCog(self.member_stops, self)
        await self.add_cog(bans)
        await self.add_cog(AllowedServersCog(self, settings))
        self.region_offer = RegionOffers(
            self, self.queue, self.services, settings.models_dir, settings.serves_server
        )
        self.add_dynamic_items(
            *RESULT_BUTTONS,
            PageButton,
            HistoryPageButton,
            MemberJobsPageButton,
            WordsButton,
            ImagineSuggestionButton,
        )
        await self._sync_commands()
        # Before the gateway connects (discord.py runs this hook first), so no member waits;
        # and before the queue starts, so no model is loaded yet (see _settle_start_up_heap).
        await self.services.prompts.warm_up(settings.operator_banned_words)
        _settle_start_up_heap()
        # Members banned, kicked or timed out while Easel was offline: asked about in the
        # background; each one's restored jobs render and post only after their answer.
        await self.queue.start(before_delivery=bans.start_restored_checks)
        # Their messages' places move again, through their channels.
        self.results.follow_restored(
            await self.queue.queued_progress_posts(),
            self.queue.queued_places,
            await self.queue.queued_private_tokens(),
        )
        # In the background, the gateway not kept waiting (seconds with many members): a
        # command before it ends reads what it needs, as without it.
        self._reading_ahead = asyncio.create_task(self._read_ahead(), name="easel-read-ahead")
        # After the replay: a mask editor's submit (a direct message's link) made during it
        # would be queued twice, or ahead of the member's older restored jobs.
        await self._start_web_server(self._db, admin, admins)
        self._pruning = asyncio.create_task(retention.run(), name="easel-retention")
        # /forget-me's requests and deletes of posts that the last stop left, and the deletes
        # Discord refused, in the background while the bot runs.
        history.resume_forget_me(self)
        self._log_start_up(await schema_version(self._db))
        self.is_set_up = True

    async def _read_ahead(self) -> None:
        """Read who saved settings, who spent anything lately and which guilds store a quota
        limit: a member's first checks then read nothing when they have none of those."""
        try:
            await self.services.member_settings.read_ahead()
            await self.queue.read_ahead()
        except Exception:  # it only spares reads (first checks read, as without it); a failure
            # kept in the task would make the stop raise before it closes the database
            log.exception("could not read ahead who saved settings or spent lately")

    def _log_start_up(self, schema: int) -> None:
        """One line saying what this start found (the gateway's own line follows; the data
        folder absolute: a relative one started from another folder is an empty database),
        and a warning for each thing that makes every render fail while the bot looks healthy."""
        settings = self.settings
        if settings.queue_url:
            renders = f"on the broker {redact_url(settings.queue_url)}"
        else:
            from inference.devices import device_problem, resolve_devices

            devices = resolve_devices(settings.devices)
            renders = f"on {', '.join(devices)}"
            for problem in filter(None, map(device_problem, devices)):
                log.warning("%s: renders there fail; fix EASEL_DEVICES or torch's build", problem)
        models = self.services.model_names()
        if not models:
            log.warning(
                "no model in %s: every render fails; copy .safetensors checkpoints there "
                "(or run `easel tiny-model %s/tiny` to try Easel out)",
                settings.models_dir,
                settings.models_dir,
            )
        elif settings.default_model is not None and settings.default_model not in models:
            # Members never typed this name: their refusal would only say it is not there.
            log.warning(
                "EASEL_DEFAULT_MODEL=%r is not among the models Easel can load (%s): every "
                "request naming no model is refused; fix the setting (`easel doctor` says why)",
                settings.default_model,
                ", ".join(models),
            )
        if pickled := self.services.registry.refused_pickles():
            log.warning("checkpoints %s", pickles_left_out(pickled))
        captioner = settings.captioner_dir
        if captioner is not None and (no_captioner := captioner_problem(captioner)) is not None:
            log.warning("/describe fails: %s", no_captioner)
        guild = settings.dev_guild_id
        commands_scope = "globally" if guild is None else f"to server {guild} only"
        web = settings.public_url or "off (EASEL_PUBLIC_URL is empty)"
        metrics_at = "off"
        if self.metrics_server is not None:
            metrics_at = f"{self.metrics_server.host}:{self.metrics_server.port}"
        invite = discord.utils.oauth_url(
            self.application_id or 0,  # set by login(), which runs this hook
            permissions=INVITE_PERMISSIONS,
            scopes=("bot", "applications.commands"),
        )
        log.info(
            "started: renders %s; %d model(s) in %s; data in %s (schema %d); commands "
            "registered %s; web pages %s; metrics %s; invite link %s",
            renders,
            len(models),
            settings.models_dir,
            settings.data_dir.resolve(),
            schema,
            commands_scope,
            web,
            metrics_at,
            invite,
        )

    async def _start_web_server(
        self, conn: aiosqlite.Connection, admin: AdminCog, admins: DiscordServerAdmins
    ) -> None:
        """The Vary (Region) mask editor and the admin dashboard, when EASEL_PUBLIC_URL says
        where members reach them."""
        endpoint = self.settings.web_endpoint
        if endpoint is None:
            return
        data_dir = self.settings.data_dir
        secret = await asyncio.to_thread(load_secret, self.settings.web_secret, data_dir)
        signer = LinkSigner(secret, data_dir / "used-links")
        public_url = self.settings.public_url
        dashboard = Dashboard(
            signer,
            public_url,
            conn,
            self.queue,
            admins,
            self.services.guild_policy.settings,
            data_dir,
        )
        web = RegionWebServer(
            signer,
            self.region_offer,
            public_url,
            *endpoint,
            more_pages=(dashboard,),
            trusted_proxies=self.settings.web_trusted_proxies,
        )
        try:
            await web.start()
        except OSError as error:
            await web.stop()
            raise SettingsError(
                f"EASEL_WEB_ADDR={self.settings.web_addr}: cannot listen there "
                f"({error.strerror or error}); free the port or choose another"
            ) from None
        self.region_offer.web = web
        admin.dashboard_site = dashboard

    async def _render_slots(self) -> Sequence[RenderSlot]:
        """Remote slots on the broker when EASEL_QUEUE_URL names one, else a thread per device."""
        if self.settings.queue_url:
            from bot.jobs.broker.client import connect_slots

            # Keys the broker jobs' secrets; on disk, so a restarted bot verifies their results.
            job_key = await asyncio.to_thread(
                load_secret, "", self.settings.data_dir, "broker-secret"
            )
            self._broker, slots = await connect_slots(
                self.settings.queue_url, self.settings.remote_slots, job_key
            )
            return slots
        from inference.devices import resolve_devices

        self._devices = [
            DeviceWorker(device, self._engine_factory, warm_start=self.settings.warms_up(device))
            for device in resolve_devices(self.settings.devices)
        ]
        return self._devices

    def _stop_for_lost_devices(self) -> None:
        """Every device is lost: the stop starts (its jobs stay queued for the next process),
        and the process ends with ``DEVICE_LOST_EXIT_STATUS`` for its supervisor to restart."""
        log.critical("no device left to render on: stopping, for a restart to get them back")
        self.exit_status = DEVICE_LOST_EXIT_STATUS
        if self._shutdown is None:  # as ``close`` starts it; the gateway's end ends ``run``
            self._shutdown = asyncio.create_task(self._shut_down())

    async def _token_taken(self) -> bool:
        """Whether Discord still takes the bot's token (a result's post was refused with a
        401), by one cheap call; refused, the stop starts, as a gateway closed with 4004 starts
        it (Discord may not close it soon after a reset), and `easel run` ends as a start with
        a refused token does: the results wait for the next start."""
        try:
            await self.application_info()
        except discord.HTTPException as error:
            if error.status != 401:
                raise
            self.token_refused = True
            if self._shutdown is None:  # as ``close`` starts it; the gateway's end ends ``run``
                self._shutdown = asyncio.create_task(self._shut_down())
            return False
        return True

    @property
    def journal_closed(self) -> bool:
        """Whether the database is closed (or was never opened): nothing more is written."""
        return self._db is None

    def removed_from(self, guild_id: int) -> bool:
        """Whether Easel is no longer in the server ``guild_id``: known once the gateway's
        READY listed its servers (an outage's stay listed, unavailable); never before it, as
        while a restart restores its jobs."""
        return self.is_ready() and self.get_guild(guild_id) is None

    def devices_still_busy(self) -> list[str]:
        """Each device whose thread is still inside its work but a load, with that work
        ("cuda:0 in job <id>"): after a stop, one stuck in a render step."""
        return [
            f"{device.device} in {in_hand}"
            for device in self._devices
            if (in_hand := device.in_hand) is not None and device.loading is None
        ]

    def devices_still_loading(self) -> list[str]:
        """Each device whose thread is still loading with no job on it, with what ("cuda:0
        was still loading model <name>"): after a stop, one in a warm start's load."""
        return [
            f"{device.device} was still loading {loading}"
            for device in self._devices
            if (loading := device.loading) is not None
        ]

    async def _sync_commands(self) -> None:
        """Globally, or to EASEL_DEV_GUILD_ID's server alone. The copies registered to a
        server before are removed once the setting is gone or names another server: else
        its members see each command twice, the old copy with its old options."""
        marker = self.settings.data_dir / DEV_GUILD_MARKER
        earlier = await asyncio.to_thread(_read_guild_id, marker)
        guild_id = self.settings.dev_guild_id
        if earlier is not None and earlier != guild_id:
            await self._clear_guild_commands(earlier)
            await asyncio.to_thread(marker.unlink, missing_ok=True)
        if guild_id is None:
            await self.tree.sync()
            return
        guild = discord.Object(guild_id)
        self.tree.copy_global_to(guild=guild)
        try:
            await self.tree.sync(guild=guild)
        except discord.Forbidden as error:
            raise SettingsError(
                f"EASEL_DEV_GUILD_ID={guild_id}: Discord refused the commands there "
                f"({error.text or error.status}); invite the bot to that server with the "
                "applications.commands scope, or fix the id"
            ) from None
        if earlier != guild_id:
            await asyncio.to_thread(marker.write_text, f"{guild_id}\n", encoding="utf-8")

    async def _clear_guild_commands(self, guild_id: int) -> None:
        guild = discord.Object(guild_id)
        self.tree.clear_commands(guild=guild)
        try:
            await self.tree.sync(guild=guild)
        except discord.Forbidden:
            log.warning(
                "cannot remove the commands registered earlier to server %s (the bot is no "
                "longer there?); whoever manages it can hide them in Server Settings, "
                "Integrations",
                guild_id,
            )
        else:
            log.info("removed the commands registered earlier to server %s alone", guild_id)

    async def close(self) -> None:
        """Stop everything once; a second call (signal, then ``async with``) waits for the first."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._shut_down())
        await asyncio.shield(self._shutdown)

    async def __aexit__(self, *exc_info: object) -> None:
        # discord.py's waits only for its own close once ``_shut_down`` has started it: a stop
        # the bot started itself (a lost device, a refused token) must end whole (the run
        # file's last count, the database closed) before ``run`` returns and the loop's end
        # cancels what is left of it.
        await self.close()

    async def _shut_down(self) -> None:
        # Renders first (they finish, or stay journaled for the next start), then the commands
        # and clicks being handled, then Discord, then whatever those handlers still had in
        # hand, and only then the database they journal into. Every wait ends by ``waits_end``.
        loop = asyncio.get_running_loop()
        waits_end = loop.time() + STOP_BUDGET_S - CLOSING_RESERVE_S
        if hasattr(self, "results"):  # a delivery waiting for READY is left to the next start
            self.results.stopping()
        if hasattr(self, "region_offer") and self.region_offer.web is not None:
            await self.region_offer.web.stop()  # no new jobs from the page while stopping
        if hasattr(self, "member_stops"):  # what waits for their answers stays journaled
            await self.member_stops.stop_restored_checks(deadline=waits_end)
        if hasattr(self, "queue"):
            await self.queue.stop(deadline=waits_end)
        if hasattr(self, "results"):  # its pointer edits, started by deliveries
            await self.results.close()
        await _interaction_handlers_settled(waits_end)
        # Its answers "not enabled here" sent, or cancelled, while the HTTP session is open.
        assert isinstance(self.tree, EaselCommandTree)  # the ``tree_cls`` it was made with
        await self.tree.refusals_sent(min(HANDLER_GRACE_S, waits_end - loop.time()))
        await super().close()
        await _interaction_handlers_settled(waits_end)
        # One a frame parsed while the gateway closed started: its session is closed, so ended.
        await self.tree.refusals_sent(0)
        if hasattr(self, "services"):  # no member's prompt or upload is read from here on
            self.services.prompts.close()
            self.services.picture_work.close()
        if hasattr(self, "region_offer"):  # nor a region in words segmented
            self.region_offer.close()
        for background in (self._reading_ahead, self._pruning):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        if self._broker is not None:
            await self._broker.close()
            self._broker = None
        if self._run_file is not None:  # the last ends counted
            await self._run_file.stop()
        if self._db is not None:
            await close_database(self._db)
            self._db = None
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None


def _settle_start_up_heap() -> None:
    """Collect once what starting left and keep the rest (modules, the CLIP vocabulary...) out
    of later collections, once per process: else the first full collection falls in the first
    burst of commands and walks all of it before their acknowledgements (see
    docs/performance.md, "The first burst"). Frozen objects are never collected as cycles, so
    this runs before any model is loaded: an evicted model's cycles must stay collectable."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


async def _interaction_handlers_settled(deadline: float) -> None:
    """Wait for the tasks discord.py runs slash commands and component clicks in, for
    ``HANDLER_GRACE_S`` at most and not past ``deadline`` (a loop time). One cut short has
    journaled a job it submitted or none: ``JobQueue.submit`` writes it whole."""
    current = asyncio.current_task()
    handlers = [
        task
        for task in asyncio.all_tasks()
        if task is not current and task.get_name().startswith(_HANDLER_TASK_PREFIXES)
    ]
    left = deadline - asyncio.get_running_loop().time()
    if handlers and left > 0:
        await asyncio.wait(handlers, timeout=min(HANDLER_GRACE_S, left))


def _read_guild_id(marker: Path) -> int | None:
    try:
        return int(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


# discord.py's own decoder (orjson's when installed), kept for the text that needs no repair.
_DISCORD_LOADS = discord.utils._from_json


def _discord_loads(text: str | bytes | bytearray | memoryview) -> object:
    return loads_replacing_lone_surrogates(text, _DISCORD_LOADS)


def build(settings: Settings, engine_factory: EngineFactory | None = None) -> EaselBot:
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    # discord.py decodes every gateway event and REST answer with this (gateway.py, http.py).
    # Half a surrogate pair in any text a member types ("\ud800") made orjson refuse the event,
    # which ended the connection (the whole bot), or without orjson failed the tokenizer and
    # SQLite: it is read as U+FFFD instead.
    discord.utils._from_json = _discord_loads
    return EaselBot(settings, engine_factory)


async def run(
    settings: Settings,
    *,
    exit_process: Callable[[int], NoReturn] = exit_now,
    early_stop: EarlyStop | None = None,
) -> int:
    """``easel run``: the bot until SIGINT/SIGTERM (or until no device is left), then a clean
    stop that loses no job; returns the process's exit status.

    A device thread still busy after the stop is not waited for: ``exit_process``
    (``os._exit`` once the output is flushed) ends the process, as returning would wait for
    that thread for good, with ``status_after_stop``'s status: a lost device's, else 2 (a
    settings error, a refused token), else ``STUCK_DEVICE_EXIT_STATUS`` (stuck in a step or a
    job), else 1 (failed), else 0 (only loading a model). With no thread left busy, a refused
    token (a 4004, or a post's 401 whose check was refused) raises ``SettingsError``, said by
    the CLI in one line (status 2). A caller
    that runs this inside a process it keeps (a test) passes one that raises instead. A
    second SIGINT or SIGTERM while stopping ends the process at once (``end_at_once``). One
    heard before the event loop handled them (``early_stop``: the command line's imports)
    ends the run before anything starts, with status 0."""
    settings.require_token()
    settings.require_data_dir()
    handler = install_logging(settings.log_format, secrets=settings.log_secrets)
    warn_of_unknown_settings()  # in the format just installed
    bot = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop: %s", describe_loop(loop))

    def stop_asked(signum: signal.Signals) -> None:
        if stop.is_set():
            end_at_once(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_asked, signum)
    data_dir_lock: DataDirLock | None = None
    try:
        if early_stop is not None and early_stop.signum is not None:
            log.info("stopped by %s before starting: nothing was started", early_stop.signum.name)
            return 0
        # Before the database opens: a second Easel there would render this one's running jobs
        # again. Inside the try: whatever fails from here on lets the lock go.
        data_dir_lock = hold_data_dir(settings.data_dir)
        tidy_restore_copies(settings.database_path)  # no restore runs while the lock is held
        async with bot:
            connection = asyncio.create_task(bot.start(settings.discord_token))
            stop_requested = asyncio.create_task(stop.wait())
            await asyncio.wait({connection, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            stop_requested.cancel()
            if not connection.done():
                log.info("stopping: running renders finish or return to the queue")
                if not bot.is_set_up:
                    # Still starting: the rest of setup_hook must not run on what close() shuts
                    # (a transaction the cancel meets rolls back whole: db.database.transaction).
                    connection.cancel()
                    await asyncio.wait({connection})
                await bot.close()
            if not connection.cancelled():
                try:
                    await connection  # raises what ended the connection, if it failed
                except discord.ConnectionClosed as closed:
                    if closed.code != GATEWAY_AUTHENTICATION_FAILED:
                        raise
                    bot.token_refused = True
            if bot.token_refused:
                raise _token_refused()  # said as a start with that token says it
    finally:
        try:
            # Before the signal handlers go: a signal meanwhile must not raise
            # KeyboardInterrupt here, where nothing would end the process past the stuck thread.
            busy, loading = bot.devices_still_busy(), bot.devices_still_loading()
            if busy or loading:
                # Closed, all but those threads: asyncio.run (its thread closing the device)
                # and the interpreter's exit (concurrent.futures) would wait for them for good.
                ended_by = sys.exc_info()[1]  # what ended the bot, if it failed
                failed = ended_by is not None
                # Said in its one line (a refused token), not as a failure's traceback.
                refused = isinstance(ended_by, SettingsError)
                status = status_after_stop(
                    bot.exit_status, busy, loading, failed=failed, settings_refused=refused
                )
                if busy:
                    log.warning(
                        "stopped with %s still busy past the stop's %.0f s (a step in a hung "
                        "kernel or driver, or a job's model still loading?): exiting with "
                        "status %d without waiting for it; %s",
                        "; ".join(busy),
                        STOP_BUDGET_S,
                        status,
                        "the database is closed, and a job left there is queued again at the "
                        "next start"
                        if bot.journal_closed
                        else "the database was not closed (the stop failed before): what it "
                        "committed stays, and a job left running there is queued again at the "
                        "next start",
                        exc_info=failed and not refused,
                    )
                if refused:
                    log.error("%s: exiting with status %d", ended_by, status)
                elif failed and not busy:
                    log.error(
                        "the bot failed: exiting with status %d without waiting for the loads",
                        status,
                        exc_info=True,
                    )
                exit_process(status)
        finally:  # past an exit_process that returns control (a test's raises)
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
            logging.getLogger().removeHandler(handler)
            if data_dir_lock is not None:
                data_dir_lock.release()
    return bot.exit_status

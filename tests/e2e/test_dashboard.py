"""The admin dashboard through the fake Discord and a real headless Chromium (Debian's, driven
by Playwright): an admin signs in with a one-time link and sees their server's queue, workers,
public pictures, quota use and refusals; private results and other servers never show."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

import cogs.admin as admin_cog
from bot.app import EaselBot
from bot.jobs.accounting import Member
from bot.jobs.queue.admission import Admission, Admitted
from bot.jobs.queue.values import Submission
from bot.policy.quota import Period
from bot.settings import Settings
from bot.web.dashboard import COOKIE, READING_RIGHTS_S, SESSION_LIFETIME_S
from tests.e2e.browser import assert_strict_csp, watch_csp
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    limit_daily_images,
    link_of,
    reply_to,
    with_web_server,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.payloads import (
    DEFAULT_MEMBER_PERMISSIONS,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_VIEW_CHANNEL,
)
from tests.support.engines import HeldEngine

MANAGE_GUILD = 1 << 5


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> Settings:
    # Registered globally (commands synced to one server exist there only), with the web server.
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir)
    return with_web_server(settings.model_copy(update={"dev_guild_id": None}))


async def test_an_admin_sees_their_servers_queue_and_public_pictures_only(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    other = fake.add_guild("Other server")
    fake.add_member(fake.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id)
    limited = 565656565656565656
    fake.add_member(limited, "limited", roles=(fake.member_role_id,))
    async with start_easel() as bot:
        public = job_id_of(await imagine(fake, "a public lighthouse"))
        elsewhere_handle = await fake.invoke_command(
            "imagine", {"prompt": "a foreign castle", "steps": 2}, channel=other.channel_id
        )
        elsewhere = job_id_of(await elsewhere_handle.wait_for_original(has_picture, 90))
        # Refusals: a bad size here and in the other server, and a member over their quota.
        refused_here = await reply_to(fake, "imagine", {"prompt": "a cat", "size": "13x13"})
        assert refused_here.is_ephemeral and "13x13" in refused_here.content
        await reply_to(
            fake, "imagine", {"prompt": "a cat", "size": "17x17"}, channel=other.channel_id
        )
        await limit_daily_images(fake, 0, member=limited)
        over_quota = await reply_to(fake, "imagine", {"prompt": "a cat"}, user=limited)
        assert over_quota.is_ephemeral and over_quota.content.startswith("⛔")
        await reply_to(fake, "settings", {"private_results": True})
        private = job_id_of(await imagine(fake, "a secret garden"))
        # Refused while keeping results private: the reason is kept, the sentence is not.
        await reply_to(fake, "imagine", {"prompt": "a cat", "size": "19x19"})
        # A long private job, rendering while the admin looks.
        long_job = await fake.invoke_command(
            "imagine", {"prompt": "a secret tower", "steps": 150, "size": "512x512"}
        )
        rendering = await long_job.wait_for_original(lambda m: "Rendering" in m.content, 30)
        [cancel_id] = [c for c in rendering.custom_ids if c.startswith("easel:cancel:")]
        running = cancel_id.removeprefix("easel:cancel:")

        refused = await reply_to(fake, "easel-admin dashboard")  # the tester manages nothing
        assert "Manage Server permission" in refused.content and not refused.components
        offer = await reply_to(fake, "easel-admin dashboard", user=fake.owner_id)
        assert offer.is_ephemeral
        link = link_of(offer)
        home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            context = await browser.new_context()
            page = await context.new_page()
            violations = await watch_csp(page)
            signed_in = await page.goto(link)
            assert signed_in is not None
            assert_strict_csp(await signed_in.header_value("content-security-policy"))
            await page.wait_for_function(
                "(job) => [...document.querySelectorAll('#gallery img')]"
                ".some((img) => img.dataset.job === job && img.naturalWidth > 0)",
                arg=public,
            )
            assert page.url == home  # the used link left the address bar
            assert await page.inner_text("#server") == "Easel test guild"
            queue = await page.inner_text("#queue tbody")
            assert running in queue and "rendering on cpu" in queue and "(private)" in queue
            workers = await page.inner_text("#workers tbody")
            assert "cpu" in workers and "busy" in workers and running in workers
            quota = await page.inner_text("#quota tbody")
            report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
            [today] = [usage.images for usage in report.periods if usage.period is Period.DAY]
            assert f"member {fake.user_id}\t{today}\t" in quota  # as /quota counts, here only
            refusals = await page.inner_text("#refusals tbody")
            # Newest first: the tester's /easel-admin and bad size (both private by then),
            # the quota refusal, the first bad size.
            here = f"channel {fake.channel_id}"
            tester, other_member = f"member {fake.user_id}\t{here}", f"member {limited}\t{here}"
            [admin_refusal, private_refusal, quota_refusal, input_refusal] = refusals.splitlines()
            assert admin_refusal.endswith(f"{tester}\tpermission\t(private)")
            assert private_refusal.endswith(f"{tester}\tinput\t(private)")
            assert quota_refusal.endswith(f"{other_member}\tquota\t{over_quota.content}")
            assert input_refusal.endswith(f"{tester}\tinput\t{refused_here.content}")
            counts = await page.inner_text("#refusal-counts tbody")
            assert counts.splitlines() == ["input\t2", "permission\t1", "quota\t1"]
            shown = await page.content()
            for hidden in (private, elsewhere, "secret", "foreign castle", "17x17", "19x19"):
                assert hidden not in shown
            assert "a public lighthouse" in shown

            [cookie] = await context.cookies()
            assert cookie["name"] == COOKIE and cookie["httpOnly"]
            assert (
                cookie["sameSite"] == "Strict" and cookie["path"] == f"/dashboard/{fake.guild_id}"
            )
            assert abs(cookie["expires"] - (time.time() + SESSION_LIFETIME_S)) < 60
            await page.reload()  # the session, not the link, keeps the admin signed in
            await page.wait_for_function("() => document.querySelectorAll('#gallery img').length")

            again = await page.goto(link)  # the link works once
            assert again is not None and again.status == 403
            assert "already used" in await page.inner_text("main")
            await reply_to(fake, "cancel", {"job_id": running})
            session = {COOKIE: cookie["value"]}
            picture = f"{home}/picture"
            async with aiohttp.ClientSession(cookies=session) as http:
                async with http.get(f"{picture}/{public}/0") as thumbnail:
                    assert thumbnail.status == 200 and thumbnail.content_type == "image/jpeg"
                for hidden in (private, elsewhere):  # with a valid session, still nothing
                    async with http.get(f"{picture}/{hidden}/0") as answer:
                        assert answer.status == 404
                other_home = f"{bot.settings.public_url}/dashboard/{other.guild_id}"
                for other_route in (f"{other_home}/state", f"{other_home}/picture/{elsewhere}/0"):
                    async with http.get(other_route) as answer:  # this session is for one server
                        assert answer.status == 403

            # Signing out: the page's button posts with the cookie (same site); the browser
            # forgets it, and a copy of it is refused from now on.
            await page.goto(home)
            await page.click("#sign-out")
            await page.wait_for_selector("text=You signed out of the dashboard.")
            assert await context.cookies() == []
            async with (
                aiohttp.ClientSession(cookies=session) as http,
                http.get(f"{home}/state") as answer,
            ):
                assert answer.status == 403 and "signed out" in await answer.text()
            assert violations == []  # the pages worked within their policy
            await browser.close()


async def test_forged_expired_and_missing_sign_ins_are_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    # Manage Server in the interaction that asked for the link, but no role that grants it
    # when the link is opened: as if the role was taken away in between.
    demoted = 434343434343434343
    fake.add_member(demoted, "demoted", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    async with start_easel() as bot:
        link = link_of(await reply_to(fake, "easel-admin dashboard", user=fake.owner_id))
        demoted_link = link_of(await reply_to(fake, "easel-admin dashboard", user=demoted))
        payload, signature = link.rsplit(".", 1)
        forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
        web = bot.region_offer.web
        assert web is not None
        home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"
        async with aiohttp.ClientSession() as http:
            for refused in (forged, link.replace("/dashboard/login/", "/region/")):
                async with http.get(refused) as answer:
                    assert answer.status == 403 and "not one Easel made" in await answer.text()
            async with http.get(f"{home}/state") as answer:  # no session
                assert answer.status == 403 and "not signed in" in await answer.text()
            async with http.get(f"{home}/state", cookies={COOKIE: "made.up"}) as answer:
                assert answer.status == 403
            real_clock = web.signer.clock
            web.signer.clock = lambda: real_clock() + 16 * 60
            async with http.get(link) as answer:
                assert answer.status == 403 and "expired" in await answer.text()
            web.signer.clock = real_clock
            async with http.get(demoted_link) as answer:  # Discord's answer now decides
                assert answer.status == 403
                assert "no longer have the Manage Server permission" in await answer.text()
            async with http.get(link) as answer:  # nothing used it: it still signs in
                assert answer.status == 200
                session = {COOKIE: answer.cookies[COOKIE].value}
            async with http.get(f"{home}/state", cookies=session) as answer:
                assert answer.status == 200
            web.signer.clock = lambda: real_clock() + SESSION_LIFETIME_S + 1
            async with http.get(f"{home}/state", cookies=session) as answer:  # it has ended
                assert answer.status == 403 and "ended" in await answer.text()


ADMIN = 727272727272727272  # Manage Server from a role: not the owner, who reads everything


def cancel_id_of(message: StoredMessage) -> str:
    """The job id on the message's Cancel button ("" when it has none)."""
    cancel = "easel:cancel:"
    return next((c.removeprefix(cancel) for c in message.custom_ids if c.startswith(cancel)), "")


def rendering(message: StoredMessage) -> bool:
    return "Rendering" in message.content


async def test_an_admin_sees_only_what_was_posted_where_they_may_read(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Manage Server is not View Channel: pictures, prompts and refusal sentences of a hidden
    channel, of one without Read Message History and of a private thread the admin was not
    added to stay out of the state and the picture route; their rights are asked of Discord
    once per READING_RIGHTS_S, not on every poll."""
    fake = fake_discord
    managers = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    fake.add_member(ADMIN, "admin", roles=(fake.member_role_id, managers))
    staff = fake.add_text_channel("staff", visible_to=[fake.user_id])
    unread = fake.add_text_channel("announcements")
    fake.set_overwrite(unread, ADMIN, deny=PERMISSION_READ_MESSAGE_HISTORY)
    secret = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    shared = fake.add_thread("shared", private=True, members=[fake.bot_user_id, ADMIN])
    made_in = {
        fake.channel_id: "a public lighthouse",
        staff: "a staff castle",
        secret: "a secret garden",
        shared: "a shared boat",
    }
    async with start_easel() as bot:
        handles = {
            prompt: await fake.invoke_command(
                "imagine", {"prompt": prompt, **QUICK}, channel=channel
            )
            for channel, prompt in made_in.items()
        }
        jobs = {
            prompt: job_id_of(await handle.wait_for_original(has_picture, RENDER_TIMEOUT_S))
            for prompt, handle in handles.items()
        }
        for channel, size in ((unread, "13x13"), (fake.channel_id, "17x17")):
            await reply_to(fake, "imagine", {"prompt": "a cat", "size": size}, channel=channel)
        # A staff job rendering and one of the open channel waiting behind it.
        long_job = await fake.invoke_command(
            "imagine", {"prompt": "a staff tower", "steps": 150, "size": "512x512"}, channel=staff
        )
        running = cancel_id_of(await long_job.wait_for_original(rendering, 30))
        queued = await fake.invoke_command("imagine", {"prompt": "a queued kite", **QUICK})
        waiting = cancel_id_of(await queued.wait_for_original(lambda m: bool(cancel_id_of(m))))

        link = link_of(await reply_to(fake, "easel-admin dashboard", user=ADMIN))
        home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"
        web = bot.region_offer.web
        assert web is not None

        def asked_about_admin() -> int:
            return sum(str(ADMIN) in call.path for call in fake.calls if call.method == "GET")

        async with aiohttp.ClientSession() as http:
            async with http.get(link) as signed_in:
                assert signed_in.status == 200
                session = {COOKIE: signed_in.cookies[COOKIE].value}
            signing_in = asked_about_admin()  # Manage Server, asked when the link is opened
            async with http.get(f"{home}/state", cookies=session) as answer:
                state = await answer.json()
            for job in (waiting, running):
                await reply_to(fake, "cancel", {"job_id": job})
            # One look at the admin's roles, one per private thread they do not manage.
            assert asked_about_admin() - signing_in == 3
            readable = {jobs["a public lighthouse"], jobs["a shared boat"]}
            assert {picture["job"] for picture in state["gallery"]} == readable
            text = str(state)
            for hidden in ("staff castle", "secret garden", "staff tower", "13x13"):
                assert hidden not in text
            queue = {job["job"]: job for job in state["queue"]}
            assert (queue[running]["prompt"], queue[running]["readable"]) == (None, False)
            assert (queue[waiting]["prompt"], queue[waiting]["readable"]) == ("a queued kite", True)
            [here, unread_there] = state["refusals"]
            assert "17x17" in here["sentence"] and here["readable"]
            assert unread_there["channel"] == str(unread) and unread_there["reason"] == "input"
            assert (unread_there["sentence"], unread_there["readable"]) == (None, False)

            picture = f"{home}/picture"
            for prompt, job in jobs.items():
                async with http.get(f"{picture}/{job}/0", cookies=session) as answer:
                    assert answer.status == (200 if job in readable else 404), prompt
            async with http.get(f"{home}/state", cookies=session) as answer:
                assert answer.status == 200
            assert asked_about_admin() - signing_in == 3  # polls within the window ask nothing

            # Added to the secret thread: the next window shows its picture.
            fake.set_thread_member(secret, ADMIN)
            real_clock = web.signer.clock
            web.signer.clock = lambda: real_clock() + READING_RIGHTS_S
            async with http.get(f"{home}/state", cookies=session) as answer:
                state = await answer.json()
            assert jobs["a secret garden"] in {picture["job"] for picture in state["gallery"]}
            async with http.get(f"{picture}/{jobs['a secret garden']}/0", cookies=session) as shown:
                assert shown.status == 200
            web.signer.clock = real_clock

            # A moderator deleted the lighthouse's result: withdrawn, it is shown nowhere again,
            # to the server's admins neither.
            lighthouse, posted = jobs["a public lighthouse"], handles["a public lighthouse"]
            assert posted.original is not None
            withdrawn = await bot.services.history.withdraw_deleted(
                fake.guild_id, fake.channel_id, [posted.original.id]
            )
            assert withdrawn == [lighthouse]
            async with http.get(f"{home}/state", cookies=session) as answer:
                state = await answer.json()
            assert lighthouse not in {picture["job"] for picture in state["gallery"]}
            assert jobs["a shared boat"] in {picture["job"] for picture in state["gallery"]}
            async with http.get(f"{picture}/{lighthouse}/0", cookies=session) as answer:
                assert answer.status == 404


async def test_an_admin_reads_archived_threads_and_is_told_what_else_hides_a_channel(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard read channels from discord.py's cache only, which drops a thread once
    Discord archives it: an archived thread's pictures and sentences were hidden from an admin
    who may read it, and a Discord failure or Easel taken out of a private thread read as "a
    channel you cannot read" (review L1). An archived thread is asked of Discord; while
    Discord does not answer, nothing of it is shown, the page says why, and a later poll asks
    again; a private thread Discord hides from Easel stays hidden, said as Easel's loss."""
    # No answer is kept (a window's worth, else): the next poll is the later one.
    monkeypatch.setattr(admin_cog, "UNANSWERED_KEPT_S", 0.0)
    fake = fake_discord
    managers = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    fake.add_member(ADMIN, "admin", roles=(fake.member_role_id, managers))
    quiet = fake.add_thread("quiet")
    secret = fake.add_thread("secret", private=True, members=[fake.bot_user_id, ADMIN])
    async with start_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "a quiet harbour", **QUICK}, channel=quiet
        )
        quiet_job = job_id_of(await made.wait_for_original(has_picture, RENDER_TIMEOUT_S))
        for channel in (quiet, secret):
            await reply_to(fake, "imagine", {"prompt": "a cat", "size": "13x13"}, channel=channel)
        await fake.archive_thread(quiet)
        fake.set_thread_member(secret, fake.bot_user_id, member=False)
        link = link_of(await reply_to(fake, "easel-admin dashboard", user=ADMIN))
        home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"

        async with aiohttp.ClientSession() as http:
            async with http.get(link) as signed_in:
                assert signed_in.status == 200
                session = {COOKIE: signed_in.cookies[COOKIE].value}

            async def state() -> tuple[set[str], dict[str, dict[str, object]]]:
                async with http.get(f"{home}/state", cookies=session) as answer:
                    shown = await answer.json()
                gallery = {picture["job"] for picture in shown["gallery"]}
                return gallery, {refusal["channel"]: refusal for refusal in shown["refusals"]}

            fake.fail("GET", "/channels/{channel}")  # what the archived thread is
            gallery, refusals = await state()
            assert quiet_job not in gallery
            unanswered, hidden = refusals[str(quiet)], refusals[str(secret)]
            assert (unanswered["sentence"], unanswered["unread_because"]) == (None, "discord")
            assert (hidden["sentence"], hidden["unread_because"]) == (None, "easel")
            fake.fail("GET", "/channels/{channel}")  # no answer for the picture's route either
            async with http.get(f"{home}/picture/{quiet_job}/0", cookies=session) as answer:
                # Not known yet, so not said missing (review R_FL1: 404): asked again soon.
                assert (answer.status, answer.headers["Retry-After"]) == (503, "3")

            gallery, refusals = await state()  # a later poll, within the window
            assert quiet_job in gallery
            assert "13x13" in str(refusals[str(quiet)]["sentence"])
            assert refusals[str(quiet)]["unread_because"] is None
            assert refusals[str(secret)]["unread_because"] == "easel"
            async with http.get(f"{home}/picture/{quiet_job}/0", cookies=session) as answer:
                assert answer.status == 200


async def admin_state(
    fake: FakeDiscord, bot: EaselBot, http: aiohttp.ClientSession
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``ADMIN`` signed in to the server's dashboard: its state, at each call a poll."""
    link = link_of(await reply_to(fake, "easel-admin dashboard", user=ADMIN))
    home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"
    async with http.get(link) as signed_in:
        session = {COOKIE: signed_in.cookies[COOKIE].value}

    async def state() -> dict[str, Any]:
        async with http.get(f"{home}/state", cookies=session) as answer:
            shown: dict[str, Any] = await answer.json()
            return shown

    return state


def to_the_next_window(bot: EaselBot) -> None:
    """The dashboard's clock moved on by ``READING_RIGHTS_S``: its rights are asked again."""
    web = bot.region_offer.web
    assert web is not None
    real_clock = web.signer.clock
    web.signer.clock = lambda: real_clock() + READING_RIGHTS_S


async def test_an_archived_thread_is_read_through_the_server_as_it_is_after_a_reconnect(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """An archived thread asked of Discord is kept a while; discord.py binds it to the server
    object of that time, which a fresh IDENTIFY (a RESUME refused) replaces: read through the
    old one, the thread kept its parent's old overwrites, and an admin who lost the parent
    still saw its pictures (review R_L1). It is asked again through the server as it is."""
    fake = fake_discord
    managers = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    fake.add_member(ADMIN, "admin", roles=(fake.member_role_id, managers))
    den = fake.add_text_channel("den")
    quiet = fake.add_thread("quiet", parent=den)
    async with start_easel() as bot, aiohttp.ClientSession() as http:
        made = await fake.invoke_command("imagine", {"prompt": "a harbour", **QUICK}, channel=quiet)
        job = job_id_of(await made.wait_for_original(has_picture, RENDER_TIMEOUT_S))
        await fake.archive_thread(quiet)
        state = await admin_state(fake, bot, http)

        async def gallery() -> set[str]:
            return {picture["job"] for picture in (await state())["gallery"]}

        assert job in await gallery()  # the archived thread, asked of Discord and kept
        old = bot.get_guild(fake.guild_id)
        await fake.drop_gateway_connection(resumable=False)
        deadline = time.monotonic() + 10
        while (now := bot.get_guild(fake.guild_id)) is None or now is old:
            assert time.monotonic() < deadline, "no fresh READY"
            await asyncio.sleep(0.05)
        fake.set_overwrite(den, ADMIN, deny=PERMISSION_VIEW_CHANNEL)  # the admin loses it
        await reply_to(fake, "help")  # the change delivered before this answer
        to_the_next_window(bot)
        assert job not in await gallery()


async def test_a_deleted_archived_thread_is_not_read_from_what_discord_said_before(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """What Discord said of an archived thread is kept a while; once the thread is deleted
    (THREAD_DELETE), it is asked again: its refusals' sentences were shown for up to
    ``LOOKED_UP_KEPT_S`` more (review R_L1)."""
    fake = fake_discord
    managers = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    fake.add_member(ADMIN, "admin", roles=(fake.member_role_id, managers))
    quiet = fake.add_thread("quiet")
    async with start_easel() as bot, aiohttp.ClientSession() as http:
        await reply_to(fake, "imagine", {"prompt": "a cat", "size": "13x13"}, channel=quiet)
        await fake.archive_thread(quiet)
        state = await admin_state(fake, bot, http)

        async def sentence() -> object:
            refusals = {r["channel"]: r for r in (await state())["refusals"]}
            return refusals[str(quiet)]["sentence"]

        assert "13x13" in str(await sentence())  # the archived thread, asked and kept
        await fake.delete_channel(quiet)
        await reply_to(fake, "help")  # THREAD_DELETE delivered before this answer
        to_the_next_window(bot)
        assert await sentence() is None
        # Asked again (the fake counts asking about a deleted channel against the bot).
        assert fake.take_violations() == [f"unknown-resource: channel {quiet} does not exist"]


async def test_jobs_made_private_while_they_wait_leave_the_dashboard(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A member turns private results on while one job of theirs renders and another waits
    (AUD7, H1): the admins' queue shows neither prompt from then on, and the gallery and the
    picture route never show the result, which went to its maker alone."""
    fake = fake_discord
    admins = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    admin = 424242424242424242
    fake.add_member(admin, "admin", roles=(fake.member_role_id, admins))
    with HeldEngine() as engine:
        async with start_easel(lambda _device: engine) as bot:
            engine.released.set()  # a public picture first: the gallery shows this channel's
            public = job_id_of(await imagine(fake, "a public lighthouse"))
            engine.released.clear()
            engine.started.clear()
            rendering = await fake.invoke_command("imagine", {"prompt": "my diary page", **QUICK})
            await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            waiting = await fake.invoke_command("imagine", {"prompt": "my second page", **QUICK})
            await waiting.wait_for_original(lambda m: "Queued" in m.content)
            await reply_to(fake, "settings", {"private_results": True})
            home = f"{bot.settings.public_url}/dashboard/{fake.guild_id}"
            link = link_of(await reply_to(fake, "easel-admin dashboard", user=admin))
            async with aiohttp.ClientSession() as http:
                async with http.get(link) as signed_in:
                    session = {COOKIE: signed_in.cookies[COOKIE].value}
                async with http.get(f"{home}/state", cookies=session) as answer:
                    queue = (await answer.json())["queue"]
                assert len(queue) == 2 and [row["prompt"] for row in queue] == [None, None]

                engine.released.set()
                result = await rendering.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
                await waiting.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
                assert result.is_ephemeral  # went to its maker alone
                job = job_id_of(result)
                async with http.get(f"{home}/state", cookies=session) as answer:
                    state = await answer.json()
                assert [row["job"] for row in state["gallery"]] == [public]
                assert state["queue"] == []
                async with http.get(f"{home}/picture/{job}/0", cookies=session) as answer:
                    assert answer.status == 404


async def test_a_job_journaled_just_after_its_makers_save_of_private_results_shows_no_prompt(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member's save of private results lands between their job's submit (which read them
    off: its response is public) and its journaling: the job is journaled private all the same
    (F7A review), so the admins' queue never shows its prompt while it renders."""
    fake = fake_discord
    managers = fake.add_role("Managers", DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    fake.add_member(ADMIN, "admin", roles=(fake.member_role_id, managers))
    with HeldEngine() as engine:
        async with start_easel(lambda _device: engine) as bot, aiohttp.ClientSession() as http:
            admit = Admission.admit

            async def saved_first(self: Admission, submission: Submission) -> Admitted:
                await bot.services.member_settings.update(fake.user_id, {"private_results": True})
                return await admit(self, submission)

            monkeypatch.setattr(Admission, "admit", saved_first)
            handle = await fake.invoke_command("imagine", {"prompt": "my diary page", **QUICK})
            await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            state = await admin_state(fake, bot, http)
            assert [row["prompt"] for row in (await state())["queue"]] == [None]
            engine.released.set()
            result = await handle.wait_for_followup(has_picture, timeout=RENDER_TIMEOUT_S)
            assert result.is_ephemeral  # went to its maker alone

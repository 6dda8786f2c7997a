"""The mask editor page, the admin dashboard and the short pages the web server answers
with: plain HTML, and JS and CSS files of ``bot/web/static`` (no build step, nothing fetched
from elsewhere: the pages work offline)."""

from __future__ import annotations

import html

from bot.requests import MAX_PROMPT_CHARS
from bot.web.assets import asset_url


def _document(
    title: str,
    body: str,
    *,
    styles: tuple[str, ...] = (),
    script: str | None = None,
    data: dict[str, str] | None = None,
) -> str:
    """A page with the common style sheet, ``styles`` and ``script`` (files in
    ``bot/web/static``: the CSP allows no inline code); ``data`` become ``data-*`` attributes
    of its ``main`` (for its script)."""
    attributes = "".join(
        f' data-{name}="{html.escape(value, quote=True)}"' for name, value in (data or {}).items()
    )
    links = "".join(
        f'<link rel=stylesheet href="{asset_url(name)}">' for name in ("easel.css", *styles)
    )
    # Deferred: it runs once the page is parsed, as the inline script at the end did.
    code = "" if script is None else f'<script src="{asset_url(script)}" defer></script>'
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>{links}{code}</head>"
        f"<body><main{attributes}>{body}</main></body></html>\n"
    )


def editor_page(picture_url: str) -> str:
    """The editor for one picture: brush, eraser, size, an optional new prompt, Submit."""
    body = f"""
<h1>Vary (Region)</h1>
<p>Paint over what should change, then Submit. The link works once.</p>
<div class=tools>
  <button id=brush type=button aria-pressed=true>Brush</button>
  <button id=eraser type=button aria-pressed=false>Eraser</button>
  <label>Size <input id=size type=range min=4 max=160 value=40></label>
  <button id=clear type=button>Clear</button>
</div>
<p id=keys>Without a mouse: Tab to the picture, move the brush with the arrow keys (with Shift,
further) and press Space to paint as it moves; Space again stops painting.</p>
<div class=stage>
  <img id=picture src="{html.escape(picture_url)}" alt="The picture to change" draggable=false>
  <canvas id=mask tabindex=0 role=application aria-label="The mask: paint what should change"
          aria-describedby=keys></canvas>
  <div id=cursor hidden></div>
</div>
<p id=pen aria-live=polite></p>
<div class=tools>
  <input id=prompt type=text maxlength={MAX_PROMPT_CHARS}
         placeholder="New prompt (optional: the picture's own otherwise)" aria-label="Prompt">
  <button id=submit type=button>Submit</button>
</div>
<p id=status role=status></p>
"""
    return _document("Vary (Region) — Easel", body, script="editor.js")


def message_page(title: str, message: str) -> str:
    """A page with one sentence: a refusal, or what happened."""
    return _document(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>")


def dashboard_page(home_url: str, state_url: str) -> str:
    """The dashboard's frame; its script fills it from ``state_url`` every few seconds."""

    def section(title: str, table_id: str, headings: list[str], empty: str) -> str:
        header = "".join(f"<th>{html.escape(heading)}</th>" for heading in headings)
        return (
            f"<h2>{html.escape(title)}</h2><table id={table_id}><thead><tr>{header}</tr></thead>"
            f"<tbody></tbody></table><p id={table_id}-empty class=empty hidden>"
            f"{html.escape(empty)}</p>"
        )

    queue = section(
        "Queue",
        "queue",
        ["Job", "Member", "Kind", "State", "Waiting", "Prompt"],
        "No job of this server is waiting or rendering.",
    )
    workers = section("Workers", "workers", ["Device", "State", "This server's jobs"], "")
    quota = section(
        "Quota used today",
        "quota",
        ["Member", "Pictures", "GPU seconds"],
        "Nobody has used any quota here today.",
    )
    refusal_counts = section(
        "Refusals today", "refusal-counts", ["Reason", "Refusals"], "Nobody was refused today."
    )
    refusals = section(
        "Latest refusals",
        "refusals",
        ["When", "Member", "Channel", "Reason", "What they were told"],
        "Nobody here has been refused anything.",
    )
    signing_out = html.escape(f"{home_url}/logout", quote=True)
    body = f"""
<h1>Easel — <span id=server></span></h1>
<form method=post action="{signing_out}"><button type=submit id=sign-out>Sign out</button></form>
<p id=status role=status>Loading…</p><p id=updated></p>
<p>Jobs waiting on Easel in all (every server): <span id=waiting></span>.</p>
{queue}<p id=queue-more hidden></p>{workers}
<h2>Recent pictures</h2>
<div id=gallery class=gallery></div>
<p id=gallery-empty class=empty hidden>No pictures yet (private results, and those of channels
you cannot read, are never shown).</p>
{quota}{refusal_counts}{refusals}
"""
    return _document(
        "Dashboard — Easel",
        body,
        styles=("dashboard.css",),
        script="dashboard.js",
        data={"home": home_url, "state": state_url},
    )

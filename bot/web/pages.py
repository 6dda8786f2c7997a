"""The mask editor page, the admin dashboard and the short pages the web server answers
with: plain HTML and JS, no build step, nothing fetched from elsewhere (the pages work
offline)."""

from __future__ import annotations

import html

from bot.requests import MAX_PROMPT_CHARS

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; padding: 1rem; background: #1e1f22;
       color: #f2f3f5; }
main { max-width: 60rem; margin: 0 auto; }
.stage { position: relative; display: inline-block; max-width: 100%; line-height: 0; }
.stage img { max-width: 100%; height: auto; display: block; user-select: none; }
#mask { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0.55;
        touch-action: none; cursor: crosshair; }
.tools { display: flex; flex-wrap: wrap; gap: 0.75rem; align-items: center; margin: 0.75rem 0; }
button { font-size: 1rem; padding: 0.4rem 0.9rem; border-radius: 4px; border: 0; }
button[aria-pressed="true"] { outline: 3px solid #5865f2; }
#submit { background: #5865f2; color: white; }
input[type=text] { font-size: 1rem; padding: 0.4rem; width: min(40rem, 100%); }
"""

# Strokes are drawn in red on the visible overlay; Submit turns them into the mask the bot
# wants: white = repaint, black = keep, at the picture's own size.
_SCRIPT = """
const canvas = document.getElementById("mask");
const picture = document.getElementById("picture");
const context = canvas.getContext("2d");
const sizeInput = document.getElementById("size");
let erasing = false;
let last = null;
function ready() {
  canvas.width = picture.naturalWidth;
  canvas.height = picture.naturalHeight;
}
if (picture.complete) { ready(); } else { picture.addEventListener("load", ready); }
function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width,
          (event.clientY - box.top) * canvas.height / box.height];
}
function stroke(from, to) {
  const box = canvas.getBoundingClientRect();
  context.globalCompositeOperation = erasing ? "destination-out" : "source-over";
  context.strokeStyle = "#ff3040";
  context.lineCap = "round";
  context.lineJoin = "round";
  context.lineWidth = Number(sizeInput.value) * canvas.width / box.width;
  context.beginPath();
  context.moveTo(from[0], from[1]);
  context.lineTo(to[0], to[1]);
  context.stroke();
}
canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  last = point(event);
  stroke(last, last);
});
canvas.addEventListener("pointermove", (event) => {
  if (last === null) { return; }
  const next = point(event);
  stroke(last, next);
  last = next;
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => { last = null; });
}
function choose(eraser) {
  erasing = eraser;
  document.getElementById("brush").setAttribute("aria-pressed", String(!eraser));
  document.getElementById("eraser").setAttribute("aria-pressed", String(eraser));
}
document.getElementById("brush").addEventListener("click", () => choose(false));
document.getElementById("eraser").addEventListener("click", () => choose(true));
document.getElementById("clear").addEventListener("click", () => {
  context.clearRect(0, 0, canvas.width, canvas.height);
});
function maskBlob() {
  const mask = document.createElement("canvas");
  mask.width = canvas.width;
  mask.height = canvas.height;
  const paint = mask.getContext("2d");
  paint.fillStyle = "black";
  paint.fillRect(0, 0, mask.width, mask.height);
  paint.globalCompositeOperation = "source-over";
  paint.drawImage(canvas, 0, 0);
  // Every painted pixel white, however faint its edge: the bot blurs the edge itself.
  const pixels = paint.getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const painted = pixels.data[i] > 0 || pixels.data[i + 1] > 0 || pixels.data[i + 2] > 0;
    const value = painted ? 255 : 0;
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = value;
  }
  paint.putImageData(pixels, 0, 0);
  return new Promise((resolve) => mask.toBlob(resolve, "image/png"));
}
document.getElementById("submit").addEventListener("click", async () => {
  const status = document.getElementById("status");
  const button = document.getElementById("submit");
  button.disabled = true;
  status.textContent = "Sending…";
  const form = new FormData();
  form.append("mask", await maskBlob(), "mask.png");
  form.append("prompt", document.getElementById("prompt").value);
  const answer = await fetch(window.location.pathname, { method: "POST", body: form });
  status.textContent = await answer.text();
  button.disabled = answer.ok;
});
"""


def _document(title: str, body: str, style: str = "", data: dict[str, str] | None = None) -> str:
    """A page; ``data`` become ``data-*`` attributes of its ``main`` (for its script)."""
    attributes = "".join(
        f' data-{name}="{html.escape(value, quote=True)}"' for name, value in (data or {}).items()
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}{style}</style></head>"
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
<div class=stage>
  <img id=picture src="{html.escape(picture_url)}" alt="The picture to change" draggable=false>
  <canvas id=mask></canvas>
</div>
<div class=tools>
  <input id=prompt type=text maxlength={MAX_PROMPT_CHARS}
         placeholder="New prompt (optional: the picture's own otherwise)" aria-label="Prompt">
  <button id=submit type=button>Submit</button>
</div>
<p id=status role=status></p>
<script>{_SCRIPT}</script>
"""
    return _document("Vary (Region) — Easel", body)


def message_page(title: str, message: str) -> str:
    """A page with one sentence: a refusal, or what happened."""
    return _document(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>")


_DASHBOARD_STYLE = """
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
th, td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #3f4147; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.75rem; margin-bottom: 1.5rem; }
.gallery figure { margin: 0; width: 12rem; }
.gallery img { width: 12rem; height: 12rem; object-fit: cover; border-radius: 4px; }
.gallery img.spoiler { filter: blur(16px); cursor: pointer; }
.gallery figcaption { font-size: 0.8rem; overflow-wrap: anywhere; }
.empty { color: #b5bac1; }
"""

# Everything members typed (prompts) goes in through textContent, never as HTML.
_DASHBOARD_SCRIPT = """
const main = document.querySelector("main");
const stateUrl = main.dataset.state;
const POLL_MS = 3000;
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}
function member(id) { return id === "0" ? "(forgotten)" : "member " + id; }
function table(id, rows, columns) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of rows) {
    const row = document.createElement("tr");
    for (const column of columns) { cell(row, column(item)); }
    body.appendChild(row);
  }
  document.getElementById(id + "-empty").hidden = rows.length > 0;
}
function gallery(pictures) {
  const holder = document.getElementById("gallery");
  holder.replaceChildren();
  for (const picture of pictures) {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = picture.url;
    image.alt = picture.prompt;
    image.dataset.job = picture.job;
    if (picture.spoiler) {
      image.className = "spoiler";
      image.addEventListener("click", () => image.classList.remove("spoiler"));
    }
    const caption = document.createElement("figcaption");
    caption.textContent = member(picture.member) + ": " + picture.prompt;
    figure.append(image, caption);
    holder.appendChild(figure);
  }
  document.getElementById("gallery-empty").hidden = pictures.length > 0;
}
function show(state) {
  document.getElementById("server").textContent = state.server;
  document.getElementById("waiting").textContent = String(state.waiting_in_all);
  table("queue", state.queue, [
    (job) => job.job,
    (job) => member(job.member),
    (job) => job.kind,
    (job) => job.status === "running" ? "rendering on " + job.device : "position " + job.position,
    (job) => Math.round(job.waited_s) + " s",
    (job) => job.prompt === null ? "(private)" : job.prompt,
  ]);
  table("workers", state.workers, [
    (worker) => worker.device,
    (worker) => worker.busy ? "busy" : "idle",
    (worker) => worker.jobs.join(", "),
  ]);
  table("quota", state.quota_today, [
    (usage) => member(usage.member),
    (usage) => String(usage.images),
    (usage) => usage.gpu_seconds.toFixed(1),
  ]);
  table("refusal-counts", state.refusals_today, [
    (counted) => counted.reason,
    (counted) => String(counted.count),
  ]);
  table("refusals", state.refusals, [
    (refusal) => new Date(refusal.at * 1000).toLocaleString(),
    (refusal) => member(refusal.member),
    (refusal) => refusal.channel === null ? "" : "channel " + refusal.channel,
    (refusal) => refusal.reason,
    (refusal) => refusal.sentence === null ? "(private)" : refusal.sentence,
  ]);
  gallery(state.gallery);
}
async function poll() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch(stateUrl, { cache: "no-store" });
    if (!answer.ok) {
      status.textContent = await answer.text();
      return;  // signed out: no more polling
    }
    show(await answer.json());
    status.textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "Easel did not answer; trying again.";
  }
  setTimeout(poll, POLL_MS);
}
history.replaceState(null, "", main.dataset.home);  // the used sign-in link leaves the address bar
poll();
"""


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
    body = f"""
<h1>Easel — <span id=server></span></h1>
<p id=status role=status>Loading…</p>
<p><span id=waiting></span> job(s) waiting on Easel in all (every server).</p>
{queue}{workers}
<h2>Recent pictures</h2>
<div id=gallery class=gallery></div>
<p id=gallery-empty class=empty hidden>No pictures yet (private results are never shown).</p>
{quota}{refusal_counts}{refusals}
<script>{_DASHBOARD_SCRIPT}</script>
"""
    return _document(
        "Dashboard — Easel", body, _DASHBOARD_STYLE, {"home": home_url, "state": state_url}
    )

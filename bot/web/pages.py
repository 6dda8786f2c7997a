"""The mask editor page and the short pages the web server answers with: plain HTML and JS,
no build step, nothing fetched from elsewhere (the page works offline)."""

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


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
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

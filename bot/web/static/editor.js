// The Vary (Region) mask editor. Strokes are drawn on the visible overlay in black and yellow
// stripes (they show on any picture, whatever colours one tells apart); Submit turns them into
// the mask the bot wants: white = repaint, black = keep, at the picture's own size. The
// brush follows a pointer, or the arrow keys with Space to paint (a cursor shows where).
const canvas = document.getElementById("mask");
const picture = document.getElementById("picture");
const context = canvas.getContext("2d");
const sizeInput = document.getElementById("size");
const cursor = document.getElementById("cursor");
const pen = document.getElementById("pen");
const STRIPE = 12;  // the stripes' period, in the picture's pixels
const KEY_STEP = 8;  // how far an arrow key moves the brush, in the page's pixels (Shift: x5)
let erasing = false;
let last = null;
let stripes = null;
let keyed = null;  // where the keyboard's brush is, in the picture's pixels
let painting = false;  // whether the arrow keys paint as they move (Space turns it on and off)
function ready() {
  canvas.width = picture.naturalWidth;
  canvas.height = picture.naturalHeight;
  keyed = [canvas.width / 2, canvas.height / 2];
  showCursor();
}
function stripesPattern() {
  const tile = document.createElement("canvas");
  tile.width = tile.height = STRIPE;
  const paint = tile.getContext("2d");
  const pixels = paint.createImageData(STRIPE, STRIPE);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const x = (i / 4) % STRIPE, y = Math.floor(i / 4 / STRIPE);
    const yellow = (x + y) % STRIPE < STRIPE / 2;
    pixels.data[i] = yellow ? 255 : 0;
    pixels.data[i + 1] = yellow ? 214 : 0;
    pixels.data[i + 2] = 0;
    pixels.data[i + 3] = 255;
  }
  paint.putImageData(pixels, 0, 0);
  return context.createPattern(tile, "repeat");
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
  stripes = stripes || stripesPattern();
  context.strokeStyle = stripes;
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
  keyed = last;  // the keyboard's brush goes on from where the pointer painted
  showCursor();
});
canvas.addEventListener("pointermove", (event) => {
  if (last === null) { return; }
  const next = point(event);
  stroke(last, next);
  last = keyed = next;  // the keyboard's brush follows the pointer's
  showCursor();
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => { last = null; });
}
function showCursor() {
  if (keyed === null) { return; }
  cursor.style.left = (keyed[0] / canvas.width * 100) + "%";
  cursor.style.top = (keyed[1] / canvas.height * 100) + "%";
  cursor.style.width = cursor.style.height = sizeInput.value + "px";
}
sizeInput.addEventListener("input", showCursor);
const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
function paintByKeys(on) {
  painting = on;
  pen.textContent = on
    ? "Painting: the arrow keys paint as they move."
    : "Not painting: the arrow keys move the brush only.";
}
canvas.addEventListener("keydown", (event) => {
  if (keyed === null) { return; }
  if (event.key === " ") {
    event.preventDefault();  // not a scroll
    if (event.repeat) { return; }  // Space held down turns painting on once, not on and off
    paintByKeys(!painting);
    if (painting) { stroke(keyed, keyed); }
    return;
  }
  const move = MOVES[event.key];
  if (move === undefined) { return; }
  event.preventDefault();
  const box = canvas.getBoundingClientRect();
  const step = KEY_STEP * (event.shiftKey ? 5 : 1) * canvas.width / box.width;
  const next = [Math.min(canvas.width, Math.max(0, keyed[0] + move[0] * step)),
                Math.min(canvas.height, Math.max(0, keyed[1] + move[1] * step))];
  if (painting) { stroke(keyed, next); }
  keyed = next;
  showCursor();
});
canvas.addEventListener("focus", () => { cursor.hidden = false; });
canvas.addEventListener("blur", () => {
  cursor.hidden = true;
  if (painting) { paintByKeys(false); }
});
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
  // Every painted pixel white, however faint its edge (the bot blurs the edge itself): painted
  // is what the overlay covers, its black stripes too, not what colour it has.
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const value = pixels.data[i + 3] > 0 ? 255 : 0;
    pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = value;
    pixels.data[i + 3] = 255;
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

// The Vary (Region) mask editor. Strokes are drawn in red on the visible overlay; Submit turns
// them into the mask the bot wants: white = repaint, black = keep, at the picture's own size.
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

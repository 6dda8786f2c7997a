// The admin dashboard: polls the server's state and fills the page. Everything members typed
// (prompts) goes in through textContent, never as HTML.
const main = document.querySelector("main");
const stateUrl = main.dataset.state;
const POLL_MS = 3000;
// Text set only when it changed: the same text again would still make a new node.
function write(element, text) {
  if (element.textContent !== text) { element.textContent = text; }
}
function member(id) { return id === "0" ? "(forgotten)" : "member " + id; }
// What a member typed, unless they keep it private or it was in a channel this admin cannot
// read; "because" says when that is not the admin's rights but Easel's sight or Discord.
const UNREAD = {
  easel: "(in a channel or thread Easel can no longer see)",
  discord: "(Discord did not say whether you can read its channel; asked again shortly)",
};
function typed(text, readable, because) {
  if (text !== null) { return text; }
  if (readable) { return "(private)"; }
  return UNREAD[because] || "(in a channel you cannot read)";
}
// Rows and cells are kept from poll to poll, a cell's text set only when it changed: a screen
// reader's place on the page stays where it was.
function table(id, rows, columns) {
  const body = document.querySelector("#" + id + " tbody");
  rows.forEach((item, index) => {
    const row = body.rows[index] || body.insertRow();
    columns.forEach((column, at) => {
      const td = row.cells[at] || row.insertCell();
      write(td, column(item));
    });
  });
  while (body.rows.length > rows.length) { body.deleteRow(-1); }
  document.getElementById(id + "-empty").hidden = rows.length > 0;
}
// Each picture's figure, by what the state says of it, kept while that stays the same; one
// whose thumbnail failed (503: the decoders were busy) is made again, and asked for, at the
// next poll.
const figures = new Map();
const revealed = new Set();  // the spoilers the admin chose to see: they stay shown
function figureOf(picture, key) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = picture.url;
  image.alt = "";  // the caption says its prompt: read once
  image.dataset.job = picture.job;
  image.addEventListener("error", () => figures.delete(key));
  const caption = document.createElement("figcaption");
  caption.textContent = member(picture.member) + ": " + picture.prompt;
  if (!picture.spoiler) {
    figure.append(image, caption);
    return figure;
  }
  // A button, so a keyboard reaches it too; pressed again, it hides the picture again.
  const spot = picture.job + "/" + picture.idx;
  const reveal = document.createElement("button");
  reveal.type = "button";
  reveal.className = "reveal";
  reveal.setAttribute("aria-label", "Show the spoilered picture");
  function shown(on) {
    image.classList.toggle("spoiler", !on);
    reveal.setAttribute("aria-pressed", String(on));
  }
  shown(revealed.has(spot));
  reveal.addEventListener("click", () => {
    const on = !revealed.has(spot);
    if (on) { revealed.add(spot); } else { revealed.delete(spot); }
    shown(on);
  });
  reveal.append(image);
  figure.append(reveal, caption);
  return figure;
}
function gallery(pictures) {
  const holder = document.getElementById("gallery");
  const keys = pictures.map((picture) => JSON.stringify(picture));
  const wanted = keys.map((key, index) => {
    if (!figures.has(key)) { figures.set(key, figureOf(pictures[index], key)); }
    return figures.get(key);
  });
  for (const key of [...figures.keys()]) {
    if (!keys.includes(key)) { figures.delete(key); }
  }
  // Gone figures out first, then new ones put in where they go: kept figures stay in the page
  // in their order, never taken out and put back (the keyboard's focus in one would be lost).
  for (const figure of [...holder.children]) {
    if (!wanted.includes(figure)) { figure.remove(); }
  }
  wanted.forEach((figure, index) => {
    const there = holder.children[index] || null;
    if (there !== figure) { holder.insertBefore(figure, there); }
  });
  document.getElementById("gallery-empty").hidden = pictures.length > 0;
}
function show(state) {
  write(document.getElementById("server"), state.server);
  write(document.getElementById("waiting"), String(state.waiting_in_all));
  table("queue", state.queue, [
    (job) => job.job,
    (job) => member(job.member),
    (job) => job.kind,
    (job) =>
      job.status === "running"
        ? "rendering on " + job.device
        : job.awaiting_check ? "waiting for the start-up check" : "position " + job.position,
    (job) => Math.round(job.waited_s) + " s",
    (job) => typed(job.prompt, job.readable, job.unread_because),
  ]);
  // A deep queue is listed only as far as its first jobs; the rest are counted.
  const more = document.getElementById("queue-more");
  write(more, "… and " + state.queue_more + " more of this server's jobs, further back.");
  more.hidden = state.queue_more === 0;
  document.getElementById("queue-empty").hidden = state.queue.length > 0 || state.queue_more > 0;
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
    (refusal) => typed(refusal.sentence, refusal.readable, refusal.unread_because),
  ]);
  gallery(state.gallery);
}
// The status is a live region: written only when what it says changes (a screen reader reads
// each change out). The time of the last update goes beside it, read only when asked for.
async function poll() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch(stateUrl, { cache: "no-store" });
    if (answer.status === 403) {
      status.textContent = await answer.text();
      main.replaceChildren(status);  // signed out, or no longer an admin: nothing of theirs stays
      return;  // no more polling
    }
    // Busy (503: too many connections) or failing: the page stays and asks again.
    if (!answer.ok) { throw new Error(String(answer.status)); }
    show(await answer.json());
    write(status, "");
    document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) {
    write(status, "Easel did not answer; trying again.");
  }
  setTimeout(poll, POLL_MS);
}
history.replaceState(null, "", main.dataset.home);  // the used sign-in link leaves the address bar
poll();

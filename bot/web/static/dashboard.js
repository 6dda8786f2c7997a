// The admin dashboard: polls the server's state and fills the page. Everything members typed
// (prompts) goes in through textContent, never as HTML.
const main = document.querySelector("main");
const stateUrl = main.dataset.state;
const POLL_MS = 3000;
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
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
// Rebuilt at every poll: a thumbnail answered 503 (decoders busy) is asked for again then.
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
    (job) =>
      job.status === "running"
        ? "rendering on " + job.device
        : job.awaiting_check ? "waiting for the start-up check" : "position " + job.position,
    (job) => Math.round(job.waited_s) + " s",
    (job) => typed(job.prompt, job.readable, job.unread_because),
  ]);
  // A deep queue is listed only as far as its first jobs; the rest are counted.
  const more = document.getElementById("queue-more");
  more.textContent = "… and " + state.queue_more + " more of this server's jobs, further back.";
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
    status.textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "Easel did not answer; trying again.";
  }
  setTimeout(poll, POLL_MS);
}
history.replaceState(null, "", main.dataset.home);  // the used sign-in link leaves the address bar
poll();

"""/help's pages: a short overview naming every command, and one page a topic
(``/help topic:``), each a message of at most 2,000 characters, so a feature documented here
takes room from its own topic only."""

from __future__ import annotations

from typing import Literal

HelpTopic = Literal["prompts", "flags", "buttons", "pictures", "models", "privacy", "admin"]

HELP_OVERVIEW = """\
**Easel** — Stable Diffusion in this server. More on each part: `/help topic:` \
prompts, flags, buttons, pictures, models, privacy or admin.
`/imagine prompt` — pictures from a prompt (web UI syntax, inline `--flags`).
`/vary`, `/inpaint`, `/upscale`, `/blend` — work from pictures; also **Apps ›** menus on a \
message's picture.
`/compare` — an X/Y plot of settings; `/describe image` — prompt ideas for a picture.
`/models`, `/loras`, `/embeddings`, `/wildcards` — what is installed.
`/info`, `/use-settings` — a PNG's settings, read or rendered again; `/explain` — how a \
prompt is read.
`/queue`, `/cancel`, `/quota` — your jobs in the queue, stop one, your limits.
`/history`, `/show`, `/settings`, `/presets`, `/forget-me` — your past results, defaults \
and presets, and erasing your data.
`/easel-admin` — the server's admins' settings; `/easel-mod` — moderators' (Manage Messages) \
list and withdrawal of a member's jobs.
`/help` — this; every answer from it is yours alone."""

_PROMPTS = """\
**Prompts** (`/imagine prompt`, web UI syntax):
`(word:1.3)` more weight, `[word]` less; `[from:to:0.5]` switches words part way \
(a fraction or a step), `[a|b]` alternates them each step; `AND` mixes prompts, `BREAK` \
starts a new chunk (150 chunks of 75 tokens at most; 600 over every text the switches make).
`<lora:name:0.8>` applies a LoRA; an embedding's name is used as a word; `__name__` is a \
random line of a wildcard file, `{a|b}` a random pick.
Options: `negative`, `seed`, `steps`, `cfg`, `sampler`, `schedule_type`, `size` (`WxH` or \
`16:9`), `model`, `count` (1–4), `clip_skip`; `style` adds a saved style, `preset` your \
named settings (`/presets`), `hires` re-details at twice the size, `fast` a few-step recipe \
or feature cache, `lora` picks a LoRA by name or trigger word.
`control` + `control_type` follows a picture's edges (canny), layout (tile) or a ready map \
(none) with a ControlNet (`control_weight`, `control_start`, `control_end`); `refiner` has \
an SDXL refiner finish the picture (`refiner_switch`); `sref` (or `--sref link`) follows a \
picture's style (`sref_strength`).
An option you set beats the same inline flag (`/help topic:flags`). `/explain prompt` shows \
how Easel reads a prompt, as JSON."""

_FLAGS = """\
**Inline flags**, at the end of a prompt (`a castle --ar 16:9 --seed 5`):
`--ar W:H` (or `--aspect`) shape, each side 1–21; `--seed N` (-1: random); `--no a, b` \
adds to the negative prompt; `--steps N` (1–150); `--cfg X` (0–30); \
`--sampler "DPM++ 2M Karras"`; `--model name`; `--count N` (1–4); `--fast` fast mode.
`--chaos N` (0–100) varies the grid's pictures; `--tile` seamless pictures; `--repeat N` \
(1–4) that many jobs, each charged; `--stop N` (10–100) stops after N% of the steps; \
`--relax` the lowest queue class, free of quota (up to 4 jobs, 16 pictures waiting), run \
when nothing else waits.
`--preset name` your saved settings; `--sref link` follows a picture's style, \
`--sref-strength W` (0–2) how strongly; `--faces` re-renders each face, `--restore-faces` \
restores them with a face restorer.
An `/imagine` option you set beats the same flag; the answer says which was used."""

_BUTTONS = """\
**Buttons under a result** (each job is charged to whoever clicks):
A grid: `U1`–`U4` (one picture; they read like a book: `U1` top left, `U2` top right, `U3` \
bottom left, `U4` bottom right; two side by side), `V1`–`V4` (variations), `🔄 Reroll` \
(again, new seed).
A single picture: `Vary (Subtle)`, `Vary (Strong)`, `Upscale (2x)`, `Upscale (4x)`, \
`🔄 Reroll` (under `U1`–`U4`: that picture again), `Zoom Out (2x)`, the pans (`⬅️ Pan left`, \
right, up, down), `Vary (Region)` (repaint a part you name in words or paint on a page, with \
a mouse, a finger or the keyboard) and `Fix faces`; each keeps the picture's settings. A fast \
upscale has no `🔄 Reroll` nor `Remix`: they would enlarge it again.
Every result: `Remix` (a form with its prompt and settings; the edited job renders for \
whoever submits it), `DM me` (a copy in your direct messages; not of a picture made in an \
age-restricted channel; a copy of another member's picture is deleted when they run \
`/forget-me` or a moderator withdraws it: save the file to keep it) and `Delete` (its owner, \
or a member with Manage Messages there).
Buttons keep working after the bot restarts. A result a moderator deleted, or whose prompt \
uses a word the server has banned since, is not shown or used again."""

_PICTURES = """\
**Working from pictures:**
`/vary image|message strength` — a variation (`subtle`, `strong` or 0–1, optional prompt).
`/inpaint image mask prompt` — repaints the mask's white part (`denoise`, `mask_blur`, \
`padding`, `fill`, `only_masked`, `invert`).
`/upscale image scale mode upscaler` — 2× or 4×, `fast` (the upscaler) or `creative` (then \
a diffusion re-detail).
`/blend` — new pictures from 2–5 pictures (`prompt`, `dimensions`, `strength`).
`/compare prompt x x_values` — an X/Y plot: seeds, samplers, steps, cfg, models or prompt \
words, one labelled grid.
`/describe image` — prompt ideas, each with a button that renders it.
`/info image` or **Apps › Info** — the settings stored in an Easel or web UI PNG.
`/use-settings infotext|image` or **Apps › Use settings** — render again from a picture's \
settings (Easel, web UI or Civitai).
**Apps › Vary**, **Upscale**, **Use as control** work on any message's picture you can read."""

_MODELS = """\
**Models and add-ons** (lists answer you alone, 10 a page, with `search`):
`/models` — the models this server allows, with their family (SD 1.5, SDXL, Flux…); pick one \
with `/imagine model:` or `--model name`.
`/loras` — LoRAs with their base model and trigger words; `/imagine lora:` adds one, or \
write `<lora:name:0.8>`.
`/embeddings` — textual inversions: write the name in a prompt or negative prompt.
`/wildcards` — files of options: `__name__` in a prompt is a random line.
`/upscale upscaler:` picks a model upscaler (or Lanczos); `/imagine refiner:` an SDXL \
refiner; `control` a ControlNet's picture."""

_PRIVACY = """\
**Your results and data:**
`/settings` — your defaults (steps, cfg, sampler, size, negative prompt, clip skip), \
`private_results` (your results shown to you only) and `results_by_dm` (a copy of each \
result by DM, except those made in age-restricted channels); `reset` forgets them first, \
`clear` one of them alone.
`/presets` `save`, `delete`, `list` — your named settings, used with `--preset name`.
`/history [search]` — your past jobs in this server; `/show job_id` posts one again.
`/queue`, `/cancel [job_id]`, `/quota` — your waiting jobs, stop one (never charged its \
pictures; one you stop while it renders, the GPU time it used; an admin's stop is free), \
your limits here.
`/forget-me` — asks first, then erases your jobs, pictures, uploads, settings and presets in \
every server and in DMs, for good (it cannot be undone), and deletes Easel's posts of them \
in servers (older results' too: of those gone from Easel's history, the posts of the \
last year, kept for this; a moderator can delete the others), U1–U4 reposts and the copies \
others asked for with DM me included. What stays: copies sent to you by DM (yours to \
delete); what others made from your public results (their V1–V4, Vary, 🔄, Remix or \
Upscale), theirs, with your prompt; posts in channels Easel can no longer reach (its \
answer says so); your id on the quota use of current periods until they end, and in a \
server's audit log and quota limits; the host's backups until they expire; and a record \
that you asked (your id and when), so that no backup put back undoes it.
Pictures, prompts and buttons belong to the server and channel they were made in: others \
see only what they may see there."""

_ADMIN = """\
**Server admins** (Manage Server), `/easel-admin`:
`show` — this server's settings; `channel` — where Easel answers; `model` and \
`default-model` — the models allowed here and the default; `addon` — the LoRAs, embeddings, \
VAEs, upscalers and ControlNets allowed here (none listed: all); `quota` — limits per \
server, role or member (`change:reset` removes one); `priority-role` — roles whose jobs go \
first among this server's; \
`nsfw` — the NSFW policy; `banned-word` — words refused in prompts; `restore` — a job \
withdrawn when a moderator deleted one of its posts, or withheld at delivery; `preset` — \
share a preset with everyone here; `audit` — who changed what; `dashboard` — a sign-in link \
to the server's web dashboard.
Admins may cancel members' jobs and have no quota, in their server only.
**Moderators** (Manage Messages, in the channels where they have it), `/easel-mod`: `jobs` — a \
member's jobs here, with links; `withdraw` — one job, or all of a member's; Delete under a \
result and Cancel under a job's progress also work for them; **Info** on a picture names the \
Easel jobs with its pixels."""

HELP_PAGES: dict[str, str] = {
    "prompts": _PROMPTS,
    "flags": _FLAGS,
    "buttons": _BUTTONS,
    "pictures": _PICTURES,
    "models": _MODELS,
    "privacy": _PRIVACY,
    "admin": _ADMIN,
}


def help_page(topic: str | None) -> str:
    """The overview, or ``topic``'s page."""
    return HELP_OVERVIEW if topic is None else HELP_PAGES[topic]

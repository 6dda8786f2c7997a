"""The limits Discord enforces on what a bot sends; each check returns human-readable problems.

Numbers are from Discord's developer docs (message, component, embed, interaction and
application-command resources). A problem found here is answered with 400 code 50035
("Invalid Form Body") and recorded as a violation, as a real Discord would reject it; a
new message with nothing in it, with 400 code 50006 (``empty_message_problem``).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .payloads import FLAG_COMPONENTS_V2, Json

MAX_CONTENT_CHARS = 2000
MAX_ACTION_ROWS = 5
MAX_BUTTONS_PER_ROW = 5
MAX_CUSTOM_ID_CHARS = 100
MAX_BUTTON_LABEL_CHARS = 80
MAX_SELECT_OPTIONS = 25
MAX_SELECT_OPTION_CHARS = 100  # an option's label, value and description
MAX_SELECT_PLACEHOLDER_CHARS = 150
MAX_LINK_BUTTON_URL_CHARS = 512  # discord/discord-api-docs#7301
MAX_EMBEDS = 10
MAX_EMBED_TOTAL_CHARS = 6000
MAX_EMBED_FIELDS = 25
# Each embed's texts (docs/resources/message "Embed Limits").
MAX_EMBED_TITLE_CHARS = 256
MAX_EMBED_DESCRIPTION_CHARS = 4096
MAX_EMBED_FIELD_NAME_CHARS = 256
MAX_EMBED_FIELD_VALUE_CHARS = 1024
MAX_EMBED_FOOTER_CHARS = 2048
MAX_EMBED_AUTHOR_NAME_CHARS = 256
MAX_FILES_PER_MESSAGE = 10
MAX_ATTACHMENT_DESCRIPTION_CHARS = 1024  # a file's alt text
MAX_AUTOCOMPLETE_CHOICES = 25
MAX_CHOICE_NAME_CHARS = 100
MAX_CHOICE_VALUE_CHARS = 100  # a string choice's value
MAX_MODAL_TITLE_CHARS = 45
MAX_MODAL_COMPONENTS = 5
MAX_TEXT_INPUT_CHARS = 4000  # a text input's value and max_length
MAX_TEXT_INPUT_LABEL_CHARS = 45
MAX_TEXT_INPUT_PLACEHOLDER_CHARS = 100
MAX_COMMANDS_PER_SCOPE = 100
MAX_COMMAND_OPTIONS = 25
MAX_COMMAND_DESCRIPTION_CHARS = 100  # a command's, and each of its options'
COMMAND_NAME_PATTERN = re.compile(r"^[-_\w]{1,32}$")

COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2
BUTTON_STYLE_LINK = 5
BUTTON_STYLE_PREMIUM = 6
SELECT_COMPONENT_TYPES = frozenset({3, 5, 6, 7, 8})


class Violation(enum.StrEnum):
    """The kind a violation string starts with: ``f"{kind}: {detail}"``."""

    LATE_ACK = "late-ack"
    DOUBLE_ACK = "double-ack"
    EXPIRED_TOKEN = "expired-token"
    UNKNOWN_INTERACTION = "unknown-interaction"
    NOT_ACKNOWLEDGED = "not-acknowledged"
    WRONG_RESPONSE_TYPE = "wrong-response-type"
    INVALID_MESSAGE = "invalid-message"
    INVALID_AUTOCOMPLETE = "invalid-autocomplete"
    INVALID_MODAL = "invalid-modal"
    INVALID_COMMANDS = "invalid-commands"
    FILE_TOO_LARGE = "file-too-large"
    UNKNOWN_ROUTE = "unknown-route"
    UNKNOWN_RESOURCE = "unknown-resource"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMIT_IGNORED = "rate-limit-ignored"
    GATEWAY = "gateway"


def message_problems(body: Json) -> list[str]:
    problems: list[str] = []
    content = body.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT_CHARS:
        problems.append(
            f"content is {len(content)} characters; Discord accepts at most {MAX_CONTENT_CHARS}"
        )
    problems += embed_problems(body.get("embeds") or [])
    for attachment in body.get("attachments") or []:
        description = attachment.get("description") or ""
        if len(description) > MAX_ATTACHMENT_DESCRIPTION_CHARS:
            problems.append(
                f"attachment {attachment.get('filename')!r}'s description is "
                f"{len(description)} characters; Discord accepts at most "
                f"{MAX_ATTACHMENT_DESCRIPTION_CHARS}"
            )
    components_v2 = bool((body.get("flags") or 0) & FLAG_COMPONENTS_V2)
    problems += component_problems(body.get("components") or [], components_v2=components_v2)
    return problems


def empty_message_problem(body: Json, uploads: int) -> str | None:
    """Why a new message (a post, an interaction's reply or follow-up) is empty, else None:
    Discord needs at least one of content, embeds, sticker_ids, components, files or poll
    (docs/resources/message "Create Message") and answers 50006 "Cannot send an empty
    message" (docs/topics/opcodes-and-status-codes). An edit keeps what it does not name."""
    given = ("content", "embeds", "sticker_ids", "components", "poll")
    if uploads or any(body.get(key) for key in given):
        return None
    return "a new message needs content, embeds, components, stickers, files or a poll"


def embed_problems(embeds: list[Json]) -> list[str]:
    if len(embeds) > MAX_EMBEDS:
        return [f"{len(embeds)} embeds; Discord accepts at most {MAX_EMBEDS} per message"]
    problems: list[str] = []
    total_chars = 0
    for index, embed in enumerate(embeds):
        fields = embed.get("fields") or []
        if len(fields) > MAX_EMBED_FIELDS:
            problems.append(f"embed {index} has {len(fields)} fields; at most {MAX_EMBED_FIELDS}")
        texts = [
            ("title", embed.get("title"), MAX_EMBED_TITLE_CHARS),
            ("description", embed.get("description"), MAX_EMBED_DESCRIPTION_CHARS),
            ("footer text", (embed.get("footer") or {}).get("text"), MAX_EMBED_FOOTER_CHARS),
            ("author name", (embed.get("author") or {}).get("name"), MAX_EMBED_AUTHOR_NAME_CHARS),
        ]
        for field in fields:
            texts.append(("field name", field.get("name"), MAX_EMBED_FIELD_NAME_CHARS))
            texts.append(("field value", field.get("value"), MAX_EMBED_FIELD_VALUE_CHARS))
        problems += [
            f"embed {index}: {what} is {len(text)} characters; Discord accepts at most {limit}"
            for what, text, limit in texts
            if text is not None and len(text) > limit
        ]
        total_chars += len(embed.get("title") or "") + len(embed.get("description") or "")
        total_chars += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
        total_chars += len((embed.get("footer") or {}).get("text", ""))
        total_chars += len((embed.get("author") or {}).get("name", ""))
    if total_chars > MAX_EMBED_TOTAL_CHARS:
        problems.append(
            f"embeds hold {total_chars} characters in all; at most {MAX_EMBED_TOTAL_CHARS}"
        )
    return problems


def walk_components(components: list[Json]) -> Iterator[Json]:
    """Every component, rows and containers included, in document order."""
    for component in components:
        yield component
        yield from walk_components(component.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(component.get(key), dict):
                yield from walk_components([component[key]])


def component_problems(components: list[Json], *, components_v2: bool) -> list[str]:
    problems: list[str] = []
    if not components_v2:
        if len(components) > MAX_ACTION_ROWS:
            problems.append(
                f"{len(components)} action rows; Discord accepts at most {MAX_ACTION_ROWS}"
            )
        for index, row in enumerate(components):
            if row.get("type") != COMPONENT_ACTION_ROW:
                problems.append(
                    f"top-level component {index} has type {row.get('type')}; "
                    "without the components-v2 flag only action rows (type 1) are accepted"
                )
    for row in (c for c in walk_components(components) if c.get("type") == COMPONENT_ACTION_ROW):
        problems += action_row_problems(row)
    custom_ids = [c["custom_id"] for c in walk_components(components) if "custom_id" in c]
    for custom_id in custom_ids:
        if not 1 <= len(custom_id) <= MAX_CUSTOM_ID_CHARS:
            problems.append(
                f"custom_id {custom_id[:40]!r}... is {len(custom_id)} characters; "
                f"Discord accepts 1 to {MAX_CUSTOM_ID_CHARS}"
            )
    duplicates = sorted(cid for cid, count in Counter(custom_ids).items() if count > 1)
    if duplicates:
        problems.append(f"custom_ids must be unique within a message; repeated: {duplicates}")
    for button in (c for c in walk_components(components) if c.get("type") == COMPONENT_BUTTON):
        problems += button_problems(button)
    return problems


def action_row_problems(row: Json) -> list[str]:
    children: list[Json] = row.get("components") or []
    if not children:
        return ["an action row has no components; Discord needs 1 to 5"]
    selects = [c for c in children if c.get("type") in SELECT_COMPONENT_TYPES]
    if selects and len(children) > 1:
        return ["a select menu must be alone in its action row"]
    problems: list[str] = []
    buttons = [c for c in children if c.get("type") == COMPONENT_BUTTON]
    if len(buttons) > MAX_BUTTONS_PER_ROW:
        problems.append(
            f"an action row holds {len(buttons)} buttons; Discord accepts at most "
            f"{MAX_BUTTONS_PER_ROW}"
        )
    for select in selects:
        options = select.get("options") or []
        if len(options) > MAX_SELECT_OPTIONS:
            problems.append(
                f"select {select.get('custom_id')!r} has {len(options)} options; "
                f"at most {MAX_SELECT_OPTIONS}"
            )
        placeholder = select.get("placeholder") or ""
        if len(placeholder) > MAX_SELECT_PLACEHOLDER_CHARS:
            problems.append(
                f"select {select.get('custom_id')!r}: placeholder is {len(placeholder)} "
                f"characters; Discord accepts at most {MAX_SELECT_PLACEHOLDER_CHARS}"
            )
        problems += [
            f"select {select.get('custom_id')!r}: option {key} {str(option[key])[:30]!r} is "
            f"{len(str(option[key]))} characters; Discord accepts at most "
            f"{MAX_SELECT_OPTION_CHARS}"
            for option in options
            for key in ("label", "value", "description")
            if len(str(option.get(key) or "")) > MAX_SELECT_OPTION_CHARS
        ]
    return problems


def button_problems(button: Json) -> list[str]:
    problems: list[str] = []
    style = button.get("style")
    label = button.get("label") or ""
    if len(label) > MAX_BUTTON_LABEL_CHARS:
        problems.append(f"button label {label[:30]!r}... exceeds {MAX_BUTTON_LABEL_CHARS} chars")
    if style == BUTTON_STYLE_LINK:
        url = button.get("url") or ""
        if "custom_id" in button or not url:
            problems.append("a link button (style 5) needs a url and no custom_id")
        if len(url) > MAX_LINK_BUTTON_URL_CHARS:
            problems.append(
                f"link button url {url[:40]!r}... is {len(url)} characters; "
                f"Discord accepts at most {MAX_LINK_BUTTON_URL_CHARS}"
            )
    elif style != BUTTON_STYLE_PREMIUM and not button.get("custom_id"):
        problems.append(f"a button of style {style} needs a custom_id")
    return problems


def autocomplete_problems(body: Json) -> list[str]:
    choices: list[Json] = body.get("choices") or []
    problems: list[str] = []
    if len(choices) > MAX_AUTOCOMPLETE_CHOICES:
        problems.append(
            f"{len(choices)} autocomplete choices; Discord accepts at most "
            f"{MAX_AUTOCOMPLETE_CHOICES}"
        )
    return problems + choice_problems(choices)


def choice_problems(choices: list[Json]) -> list[str]:
    """An autocomplete answer's choices, or a command option's."""
    problems: list[str] = []
    for choice in choices:
        name = str(choice.get("name", ""))
        if not 1 <= len(name) <= MAX_CHOICE_NAME_CHARS:
            problems.append(
                f"choice name {name[:30]!r} is {len(name)} characters; "
                f"Discord accepts 1 to {MAX_CHOICE_NAME_CHARS}"
            )
        value = choice.get("value")
        if isinstance(value, str) and not 1 <= len(value) <= MAX_CHOICE_VALUE_CHARS:
            problems.append(
                f"choice value {value[:30]!r} is {len(value)} characters; "
                f"Discord accepts 1 to {MAX_CHOICE_VALUE_CHARS}"
            )
    return problems


def modal_problems(body: Json) -> list[str]:
    problems: list[str] = []
    title = body.get("title") or ""
    if not 1 <= len(title) <= MAX_MODAL_TITLE_CHARS:
        problems.append(
            f"modal title is {len(title)} characters; Discord accepts 1 to {MAX_MODAL_TITLE_CHARS}"
        )
    components: list[Json] = body.get("components") or []
    if not 1 <= len(components) <= MAX_MODAL_COMPONENTS:
        problems.append(
            f"modal has {len(components)} top-level components; "
            f"Discord accepts 1 to {MAX_MODAL_COMPONENTS}"
        )
    custom_id = body.get("custom_id") or ""
    if not 1 <= len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        problems.append(
            f"modal custom_id is {len(custom_id)} characters; 1 to {MAX_CUSTOM_ID_CHARS}"
        )
    for text_input in (c for c in walk_components(components) if c.get("type") == 4):
        problems.extend(text_input_problems(text_input))
    return problems


def text_input_problems(text_input: Json) -> list[str]:
    """Discord's limits on a modal's text input (lengths in code points, as its API counts)."""
    problems: list[str] = []
    label = str(text_input.get("label") or "")
    if not 1 <= len(label) <= MAX_TEXT_INPUT_LABEL_CHARS:
        problems.append(
            f"text input label {label[:30]!r} is {len(label)} characters; "
            f"Discord accepts 1 to {MAX_TEXT_INPUT_LABEL_CHARS}"
        )
    placeholder = str(text_input.get("placeholder") or "")
    if len(placeholder) > MAX_TEXT_INPUT_PLACEHOLDER_CHARS:
        problems.append(
            f"text input {label[:30]!r}: placeholder is {len(placeholder)} characters; "
            f"Discord accepts at most {MAX_TEXT_INPUT_PLACEHOLDER_CHARS}"
        )
    given_max = text_input.get("max_length")
    max_length = MAX_TEXT_INPUT_CHARS if given_max is None else int(given_max)
    if not 1 <= max_length <= MAX_TEXT_INPUT_CHARS:
        problems.append(
            f"text input {label[:30]!r}: max_length is {max_length}; "
            f"Discord accepts 1 to {MAX_TEXT_INPUT_CHARS}"
        )
    value = str(text_input.get("value") or "")
    if len(value) > min(max_length, MAX_TEXT_INPUT_CHARS):
        problems.append(
            f"text input {label[:30]!r}: value is {len(value)} characters; at most "
            f"{min(max_length, MAX_TEXT_INPUT_CHARS)} (its max_length, and Discord's "
            f"{MAX_TEXT_INPUT_CHARS})"
        )
    return problems


def command_list_problems(commands: Any) -> list[str]:
    if not isinstance(commands, list):
        return ["the body of a bulk overwrite must be a JSON array of commands"]
    problems: list[str] = []
    if len(commands) > MAX_COMMANDS_PER_SCOPE:
        problems.append(f"{len(commands)} commands; at most {MAX_COMMANDS_PER_SCOPE} per scope")
    keys = Counter((c.get("name"), c.get("type", 1)) for c in commands)
    problems += [f"command {name!r} is defined twice" for (name, _), n in keys.items() if n > 1]
    for command in commands:
        problems += command_problems(command)
    return problems


def command_problems(command: Json) -> list[str]:
    name = str(command.get("name", ""))
    is_slash = command.get("type", 1) == 1
    problems: list[str] = []
    if is_slash and (not COMMAND_NAME_PATTERN.match(name) or name != name.lower()):
        problems.append(f"command name {name!r} must be 1-32 lowercase letters, digits, '-' or '_'")
    if is_slash:
        description = str(command.get("description", ""))
        if not 1 <= len(description) <= MAX_COMMAND_DESCRIPTION_CHARS:
            problems.append(
                f"/{name}: description is {len(description)} characters; "
                f"Discord accepts 1 to {MAX_COMMAND_DESCRIPTION_CHARS}"
            )
    problems += option_list_problems(f"/{name}", command.get("options") or [])
    return problems


def option_list_problems(where: str, options: list[Json]) -> list[str]:
    problems: list[str] = []
    if len(options) > MAX_COMMAND_OPTIONS:
        problems.append(f"{where}: {len(options)} options; at most {MAX_COMMAND_OPTIONS}")
    seen_optional = False
    for option in options:
        option_name = option.get("name", "")
        label = f"{where} {option_name}"
        description = str(option.get("description", ""))
        if not 1 <= len(description) <= MAX_COMMAND_DESCRIPTION_CHARS:
            problems.append(
                f"{label}: description is {len(description)} characters; "
                f"Discord accepts 1 to {MAX_COMMAND_DESCRIPTION_CHARS}"
            )
        if option.get("type") in (1, 2):
            problems += option_list_problems(label, option.get("options") or [])
            continue
        if not COMMAND_NAME_PATTERN.match(option_name) or option_name != option_name.lower():
            problems.append(f"{label}: option names are 1-32 lowercase characters")
        if option.get("required"):
            if seen_optional:
                problems.append(f"{label}: required options must come before optional ones")
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > MAX_AUTOCOMPLETE_CHOICES:
            problems.append(f"{label}: {len(choices)} choices; at most {MAX_AUTOCOMPLETE_CHOICES}")
        if choices and option.get("autocomplete"):
            problems.append(f"{label}: an option cannot have both choices and autocomplete")
        problems += [f"{label}: {problem}" for problem in choice_problems(choices)]
    return problems

"""INTERACTION_CREATE payloads as a Discord client would produce them from a user's action.

Option values are checked against the command the bot registered (types, required options,
choices, ranges), because Discord's own client never lets a user send anything else.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .payloads import (
    CONTEXT_BOT_DM,
    CONTEXT_GUILD,
    PERMISSION_VIEW_CHANNEL,
    Json,
    StoredAttachment,
    member_payload,
    role_payload,
)
from .records import StoredMessage
from .rules import SELECT_COMPONENT_TYPES, walk_components
from .state import DiscordState

AttachmentInput = bytes | tuple[str, bytes] | StoredAttachment

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11
OPTION_TYPE_NAMES = {
    OPTION_STRING: "a str",
    OPTION_INTEGER: "an int",
    OPTION_BOOLEAN: "a bool",
    OPTION_USER: "a member's user id (int)",
    OPTION_CHANNEL: "a channel id (int)",
    OPTION_ROLE: "a role id (int)",
    OPTION_MENTIONABLE: "a user or role id (int)",
    OPTION_NUMBER: "an int or float",
    OPTION_ATTACHMENT: "bytes, (filename, bytes) or a StoredAttachment",
}
COMPONENT_TEXT_INPUT = 4


class InteractionBuilder:
    def __init__(self, state: DiscordState) -> None:
        self.state = state

    def envelope(
        self,
        interaction_type: int,
        data: Json,
        *,
        interaction_id: int,
        token: str,
        user_id: int,
        channel_id: int,
        message: StoredMessage | None,
        attachment_size_limit: int,
    ) -> Json:
        channel = self.state.channel(channel_id)
        guild_id = self.state.guild_id_of(channel_id)
        if guild_id is not None:
            self.state.member(user_id, guild_id)  # says so when they are not in that guild
        permissions = self.state.permissions_in(channel_id, user_id)
        if not permissions & PERMISSION_VIEW_CHANNEL:
            place = "this DM" if guild_id is None else f"channel {channel_id}"
            raise ValueError(
                f"user {user_id} cannot see {place} (permissions from roles and overwrites), "
                "so Discord's client gives them nothing to use there"
            )
        payload: Json = {
            "id": str(interaction_id),
            "application_id": str(self.state.application_id),
            "type": interaction_type,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": {**channel, "permissions": str(permissions)},
            "locale": "en-US",
            "app_permissions": str(self.state.permissions_in(channel_id, self.state.bot_user_id)),
            "entitlements": [],
            "attachment_size_limit": attachment_size_limit,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            member = member_payload(self.state.member(user_id, guild_id))
            payload["member"] = {**member, "permissions": str(permissions)}
            payload["authorizing_integration_owners"] = {"0": str(guild_id)}
            payload["context"] = CONTEXT_GUILD
        else:
            # A guild-installed app used in its bot's DM: the guild-install owner is "0".
            payload["user"] = self.state.user_json(user_id)
            payload["authorizing_integration_owners"] = {"0": "0"}
            payload["context"] = CONTEXT_BOT_DM
        if message is not None:
            payload["message"] = copy.deepcopy(message.payload)
        return payload

    def slash_command_data(
        self,
        path: list[str],
        inputs: Mapping[str, Any],
        *,
        channel_id: int,
        user_id: int,
        focused: str | None = None,
    ) -> Json:
        command = self.state.find_command(path[0], 1, channel_id)
        data = self._command_header(command)
        resolved: Json = {}
        schema: list[Json] = command.get("options") or []
        target: list[Json] = []
        data["options"] = target
        for depth, sub_name in enumerate(path[1:], start=1):
            sub = next(
                (o for o in schema if o["name"] == sub_name and o["type"] in _GROUP_TYPES), None
            )
            if sub is None:
                raise LookupError(
                    f"/{' '.join(path[:depth])} has no subcommand {sub_name!r}; "
                    f"it has {[o['name'] for o in schema if o['type'] in _GROUP_TYPES]}"
                )
            entry: Json = {"name": sub_name, "type": sub["type"], "options": []}
            target.append(entry)
            target = entry["options"]
            schema = sub.get("options") or []
        where = f"/{' '.join(path)}"
        if any(o["type"] in _GROUP_TYPES for o in schema):
            raise ValueError(
                f"{where} is a group; name one of its subcommands: {[o['name'] for o in schema]}"
            )
        unknown = sorted(set(inputs) - {o["name"] for o in schema})
        if unknown:
            raise ValueError(
                f"{where} has no options {unknown}; it accepts {[o['name'] for o in schema]}"
            )
        for option in schema:
            name = option["name"]
            if name not in inputs:
                if option.get("required") and name != focused:
                    raise ValueError(f"{where} needs its required option {name!r}")
                continue
            is_focused = name == focused
            value = self._option_value(
                where, option, inputs[name], resolved, channel_id, user_id, partial=is_focused
            )
            option_entry: Json = {"name": name, "type": option["type"], "value": value}
            if is_focused:
                option_entry["focused"] = True
            target.append(option_entry)
        if resolved:
            data["resolved"] = resolved
        return data

    def message_command_data(self, name: str, message: StoredMessage) -> Json:
        data = self._command_header(self.state.find_command(name, 3, message.channel_id))
        data["target_id"] = str(message.id)
        data["resolved"] = {"messages": {str(message.id): copy.deepcopy(message.payload)}}
        return data

    def user_command_data(self, name: str, target_user_id: int, channel_id: int) -> Json:
        data = self._command_header(self.state.find_command(name, 2, channel_id))
        data["target_id"] = str(target_user_id)
        resolved: Json = {}
        self._resolve_user(target_user_id, resolved, self.state.guild_id_of(channel_id))
        data["resolved"] = resolved
        return data

    def component_data(
        self, message: StoredMessage, custom_id: str, values: list[str] | None
    ) -> Json:
        component = message.component(custom_id=custom_id)
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; a user cannot use it")
        data: Json = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECT_COMPONENT_TYPES:
            if values is None:
                raise ValueError(f"{custom_id!r} is a select menu; pass values=[...]")
            data["values"] = list(values)
        elif values is not None:
            raise ValueError(f"{custom_id!r} is not a select menu; it takes no values")
        return data

    def modal_submit_data(self, modal: Json, values: Mapping[str, str]) -> Json:
        inputs = [
            c
            for c in walk_components(modal.get("components") or [])
            if c.get("type") == COMPONENT_TEXT_INPUT
        ]
        known = {c["custom_id"] for c in inputs}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"modal has no text inputs {unknown}; it has {sorted(known)}")
        for text_input in inputs:
            if text_input.get("required", True) and not values.get(text_input["custom_id"]):
                raise ValueError(f"modal text input {text_input['custom_id']!r} is required")

        def submitted(component: Json) -> Json:
            if component.get("type") == COMPONENT_TEXT_INPUT:
                custom_id = component["custom_id"]
                value = values.get(custom_id, "")
                return {"type": COMPONENT_TEXT_INPUT, "custom_id": custom_id, "value": value}
            result: Json = {"type": component.get("type")}
            if "components" in component:
                result["components"] = [submitted(c) for c in component["components"]]
            if isinstance(component.get("component"), dict):
                result["component"] = submitted(component["component"])
            return result

        components = [submitted(c) for c in modal.get("components") or []]
        return {"custom_id": modal["custom_id"], "components": components}

    def _command_header(self, command: Json) -> Json:
        data: Json = {"id": command["id"], "name": command["name"], "type": command.get("type", 1)}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return data

    def _option_value(
        self,
        where: str,
        option: Json,
        value: Any,
        resolved: Json,
        channel_id: int,
        user_id: int,
        *,
        partial: bool,
    ) -> Any:
        option_type = option["type"]
        name = f"{where} option {option['name']!r}"
        expected = OPTION_TYPE_NAMES.get(option_type, f"type {option_type}")
        if partial:
            return str(value)  # autocomplete sends what the user has typed so far
        if option_type == OPTION_ATTACHMENT:
            return str(self._resolve_attachment(name, value, resolved, channel_id))
        if not _matches_type(option_type, value):
            raise TypeError(f"{name} takes {expected}; got {value!r}")
        if option_type == OPTION_STRING:
            _check_range(
                name, len(value), option.get("min_length"), option.get("max_length"), "length"
            )
        if option_type in (OPTION_INTEGER, OPTION_NUMBER):
            _check_range(name, value, option.get("min_value"), option.get("max_value"), "value")
        choices = [c["value"] for c in option.get("choices") or []]
        if choices and value not in choices:
            raise ValueError(f"{name} must be one of {choices}; got {value!r}")
        guild_id = self.state.guild_id_of(channel_id)
        guild = None if guild_id is None else self.state.guild(guild_id)
        users = guild.members if guild is not None else {}
        if option_type in (OPTION_USER, OPTION_MENTIONABLE) and value in users:
            self._resolve_user(value, resolved, guild_id)
        elif option_type in (OPTION_ROLE, OPTION_MENTIONABLE) and guild and value in guild.roles:
            roles = resolved.setdefault("roles", {})
            roles[str(value)] = role_payload(guild.roles[value])
        elif option_type == OPTION_CHANNEL:
            channel = self.state.channel(value)
            channels = resolved.setdefault("channels", {})
            # Discord resolves a channel with the invoking user's permissions in it.
            permissions = self.state.permissions_in(value, user_id)
            channels[str(value)] = {**channel, "permissions": str(permissions)}
        elif option_type in (OPTION_USER, OPTION_ROLE, OPTION_MENTIONABLE):
            raise LookupError(f"{name}: {value} is neither a member nor a role of the guild")
        return str(value) if option_type in _SNOWFLAKE_TYPES else value

    def _resolve_user(self, user_id: int, resolved: Json, guild_id: int | None) -> None:
        resolved.setdefault("users", {})[str(user_id)] = self.state.user_json(user_id)
        if guild_id is None:
            return
        member_json = member_payload(self.state.member(user_id, guild_id), with_permissions=True)
        del member_json["user"]
        resolved.setdefault("members", {})[str(user_id)] = member_json

    def _resolve_attachment(
        self, name: str, value: AttachmentInput, resolved: Json, channel_id: int
    ) -> int:
        if isinstance(value, StoredAttachment):
            filename, data = value.filename, value.data
        elif isinstance(value, bytes):
            filename, data = "upload.png", value
        elif isinstance(value, tuple) and len(value) == 2:
            filename, data = value
        else:
            raise TypeError(f"{name} takes {OPTION_TYPE_NAMES[OPTION_ATTACHMENT]}; got {value!r}")
        # A user's upload becomes a fresh attachment, even when it is a re-upload of a result.
        stored = self.state.store_file(channel_id, filename, data, ephemeral=True)
        resolved.setdefault("attachments", {})[str(stored.attachment_id)] = stored.payload()
        return stored.attachment_id


_GROUP_TYPES = (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
_SNOWFLAKE_TYPES = (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE)


def _matches_type(option_type: int, value: Any) -> bool:
    if isinstance(value, bool):
        return option_type == OPTION_BOOLEAN
    if option_type == OPTION_STRING:
        return isinstance(value, str)
    if option_type == OPTION_NUMBER:
        return isinstance(value, int | float)
    if option_type in (OPTION_INTEGER, *_SNOWFLAKE_TYPES):
        return isinstance(value, int)
    return False


def _check_range(name: str, value: float, low: float | None, high: float | None, what: str) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: {what} {value} is outside the accepted range [{low}, {high}]")

"""settings/*: typed settings with defaults, persisted, with change notifications."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec

SettingKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)+$")]


class Setting(msgspec.Struct, omit_defaults=True):
    key: str
    value: Any
    default: Any
    #: "bool" | "int" | "float" | "string" | "enum"
    type: str
    description: str
    isDefault: bool
    choices: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None


class SettingsGetParams(msgspec.Struct):
    key: SettingKey


class SettingsSetParams(msgspec.Struct):
    key: SettingKey
    value: Any


class SettingsResetParams(msgspec.Struct):
    key: SettingKey


class SettingsListResult(msgspec.Struct):
    settings: list[Setting]


class SettingChanged(msgspec.Struct):
    key: str
    value: Any
    previous: Any


GET = MethodSpec("settings/get", SettingsGetParams, Setting, "One setting, with its default and type.")
SET = MethodSpec("settings/set", SettingsSetParams, Setting,
                 "Change a setting; a value of the wrong type answers -32602.")
RESET = MethodSpec("settings/reset", SettingsResetParams, Setting, "Put a setting back to its default.")
LIST = MethodSpec("settings/list", Empty, SettingsListResult, "Every setting.")

CHANGED = NotificationSpec("settings/changed", SettingChanged, "A setting changed (by any client).")

METHODS = (GET, SET, RESET, LIST)
NOTIFICATIONS = (CHANGED,)

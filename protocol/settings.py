"""settings/*: typed settings with defaults, persisted, overridable from the environment or the
command line, exported and imported, with change notifications."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec, NotificationSpec

#: what a setting key looks like, in words (error messages) and as a regular expression
#: (`\Z`: Python's `$` would also match before a trailing newline; the generated JSON Schema
#: says `$`). The daemon checks keys itself, so a bad key is answered in these words.
KEY_RULE = ("a dotted name like log.level: two or more parts, each starting with a lower-case "
            "letter, letters and digits only")
KEY_PATTERN = r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)+\Z"
KEY_MAX_LENGTH = 128

SettingKey = Annotated[str, Meta(
    description=f"A setting key: {KEY_RULE}; at most {KEY_MAX_LENGTH} characters.",
    extra_json_schema={"pattern": KEY_PATTERN, "minLength": 3, "maxLength": KEY_MAX_LENGTH},
)]

#: where a setting's value in effect comes from, strongest first
SOURCES = ("cli", "env", "stored", "default")

IMPORT_MAX_KEYS = 1000


class Setting(msgspec.Struct, omit_defaults=True):
    key: str
    #: the value in effect
    value: Any
    default: Any
    #: "bool" | "int" | "float" | "string" | "enum" | "list" (a list of strings)
    type: str
    description: str
    #: no override and no stored value: `value` is the default
    isDefault: bool
    #: where `value` comes from: "cli" | "env" | "stored" | "default"
    source: str
    #: the environment variable that overrides this setting (`SIDECAR_LOG_LEVEL`)
    envVar: str
    #: a stored value that is not in effect because an override shadows it
    storedValue: Any = None
    #: what shadows `storedValue`: "cli" or "env" (the variable is `envVar`)
    shadowedBy: str | None = None
    choices: list[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: list settings: at most this many items
    maxItems: int | None = None
    #: string settings: at most this many characters; list settings: per item
    maxLength: int | None = None


class SettingsGetParams(msgspec.Struct):
    key: SettingKey


class SettingsSetParams(msgspec.Struct):
    key: SettingKey
    value: Any


class SettingsResetParams(msgspec.Struct):
    key: SettingKey


class SettingsListResult(msgspec.Struct):
    settings: list[Setting]


class SettingsExportResult(msgspec.Struct):
    #: every stored value, by key (defaults and overrides are not stored values)
    settings: dict[str, Any]


class SettingsImportParams(msgspec.Struct):
    settings: Annotated[dict[str, Any], Meta(max_length=IMPORT_MAX_KEYS)]
    #: also reset every stored setting not in `settings`
    replace: bool = False


class SettingsImportResult(msgspec.Struct):
    #: keys whose stored value was added, changed or (with `replace`) removed, sorted
    changed: list[str]


class SettingChanged(msgspec.Struct):
    key: str
    value: Any
    previous: Any


GET = MethodSpec("settings/get", SettingsGetParams, Setting, "One setting, with its default, type and source.",
                 lane="settings")
SET = MethodSpec("settings/set", SettingsSetParams, Setting,
                 "Store a setting; a value of the wrong type answers -32602. Under an override the value "
                 "is stored but not in effect (`shadowedBy`).", lane="settings")
RESET = MethodSpec("settings/reset", SettingsResetParams, Setting, "Remove a setting's stored value.",
                   lane="settings")
LIST = MethodSpec("settings/list", Empty, SettingsListResult, "Every setting.", lane="settings")
EXPORT = MethodSpec("settings/export", Empty, SettingsExportResult, "Every stored setting value, by key.",
                    lane="settings")
IMPORT = MethodSpec("settings/import", SettingsImportParams, SettingsImportResult,
                    "Store many setting values at once: all are checked first, then all stored in one "
                    "transaction, or none.", lane="settings")

CHANGED = NotificationSpec("settings/changed", SettingChanged, "A setting's value in effect changed (by any client).")

METHODS = (GET, SET, RESET, LIST, EXPORT, IMPORT)
NOTIFICATIONS = (CHANGED,)

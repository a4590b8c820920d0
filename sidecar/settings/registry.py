"""What settings exist: key, type, default, bounds. Capabilities add theirs at start-up.

Also the two spellings a setting has outside the protocol: its environment variable
(`env_var`) and the text form an override takes there (`SettingDef.parse_text`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.settings import KEY_MAX_LENGTH, KEY_PATTERN, KEY_RULE
from sidecar.errors import InvalidValue

VALUE_PATH = "$.params.value"
KEY_PATH = "$.params.key"
ENV_PREFIX = "SIDECAR_"

TYPES = ("bool", "int", "float", "string", "enum", "list")
_KEY = re.compile(KEY_PATTERN)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A setting definition or an override (environment, command line) that cannot be used:
    the daemon cannot start with it. The message names the culprit and what is expected."""


def key_problem(key: str) -> str | None:
    """Why `key` is not a well-formed setting key, in words; None when it is one."""
    if len(key) > KEY_MAX_LENGTH:
        return f"a setting key is at most {KEY_MAX_LENGTH} characters, this one has {len(key)}"
    if _KEY.fullmatch(key) is None:
        return f"{shown(key)} is not a setting key: a setting key is {KEY_RULE}"
    return None


def check_key(key: str, path: str = KEY_PATH) -> str:
    problem = key_problem(key)
    if problem is not None:
        raise InvalidValue(problem, path)
    return key


def env_var(key: str) -> str:
    """`log.level` -> `SIDECAR_LOG_LEVEL`, `server.slowRequestMs` -> `SIDECAR_SERVER_SLOW_REQUEST_MS`."""
    return ENV_PREFIX + "_".join(_CAMEL.sub("_", part) for part in key.split(".")).upper()


@dataclass(frozen=True, slots=True)
class SettingDef:
    key: str
    type: str  # one of TYPES; "list" is a list of strings
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: "string": the most characters; "list": the most characters of each item
    max_length: int = 4096
    #: "list": the most items
    max_items: int = 256

    def check(self, value: Any, path: str = VALUE_PATH) -> Any:
        """The value, normalised (a list becomes a tuple); InvalidValue at `path` when it does
        not fit this setting."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise InvalidValue(f"{self.key} takes true or false", path)
            return value
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidValue(f"{self.key} takes a number", path)
            if self.type == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise InvalidValue(f"{self.key} takes a whole number", path)
                value = int(value)
            else:
                try:
                    value = float(value)  # an int beyond 1e308 overflows here
                except OverflowError:
                    value = math.inf
                if not math.isfinite(value):
                    raise InvalidValue(f"{self.key} takes a finite number", path)
            if self.minimum is not None and value < self.minimum:
                raise InvalidValue(f"{self.key} must be at least {_number(self.minimum)}", path)
            if self.maximum is not None and value > self.maximum:
                raise InvalidValue(f"{self.key} must be at most {_number(self.maximum)}", path)
            return value
        if self.type == "list":
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise InvalidValue(f"{self.key} takes a list of strings", path)
            if len(value) > self.max_items:
                raise InvalidValue(f"{self.key} takes at most {self.max_items} items", path)
            for i, item in enumerate(value):
                if len(item) > self.max_length:
                    raise InvalidValue(f"item {i} of {self.key} is longer than {self.max_length} characters",
                                       f"{path}[{i}]")
            return tuple(value)
        if not isinstance(value, str):
            raise InvalidValue(f"{self.key} takes a string", path)
        if self.type == "enum" and self.choices is not None and value not in self.choices:
            raise InvalidValue(f"{self.key} must be one of {', '.join(self.choices)}", path)
        if len(value) > self.max_length:
            raise InvalidValue(f"{self.key} is longer than {self.max_length} characters", path)
        return value

    def parse_text(self, text: str) -> Any:
        """The value an environment variable (or a command-line flag) spells as text, checked.
        bool: true/false, 1/0, yes/no, on/off (any case); int, float: a number; string, enum:
        the text as is; list: a JSON array of strings, or items separated by commas (spaces
        around them dropped, empty ones skipped; an empty text is an empty list)."""
        value: Any = text
        if self.type == "bool":
            word = text.strip().lower()
            if word not in _TRUE + _FALSE:
                raise InvalidValue(f"{self.key} takes true or false (also 1/0, yes/no, on/off)", VALUE_PATH)
            value = word in _TRUE
        elif self.type in ("int", "float"):
            try:
                value = int(text.strip()) if self.type == "int" else float(text.strip())
            except ValueError:
                kind = "a whole number" if self.type == "int" else "a number"
                raise InvalidValue(f"{self.key} takes {kind}", VALUE_PATH) from None
        elif self.type == "list":
            stripped = text.strip()
            if stripped.startswith("["):
                try:
                    value = json.loads(stripped)
                except ValueError:
                    raise InvalidValue(f"{self.key} takes a JSON array of strings or comma-separated items",
                                       VALUE_PATH) from None
            else:
                value = [item.strip() for item in text.split(",") if item.strip()]
        return self.check(value)

    def expected(self) -> str:
        """What this setting takes, in words (for start-up errors)."""
        if self.type == "bool":
            return "true or false (also 1/0, yes/no, on/off)"
        if self.type in ("int", "float"):
            kind = "a whole number" if self.type == "int" else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{kind} from {_number(self.minimum)} to {_number(self.maximum)}"
            if self.minimum is not None:
                return f"{kind} of at least {_number(self.minimum)}"
            if self.maximum is not None:
                return f"{kind} of at most {_number(self.maximum)}"
            return kind
        if self.type == "enum" and self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.type == "list":
            return (f"a JSON array of strings or comma-separated items (at most {self.max_items}, "
                    f"each at most {self.max_length} characters)")
        return f"text of at most {self.max_length} characters"


def validate_definitions(definitions: Sequence[SettingDef]) -> None:
    """A definition a capability got wrong stops start-up with a SettingsError naming it."""
    for d in definitions:
        problem = key_problem(d.key)
        if problem is not None:
            raise SettingsError(f"setting definition: {problem}")
        if d.type not in TYPES:
            raise SettingsError(f"setting {d.key}: unknown type {d.type!r} (one of {', '.join(TYPES)})")
        if d.type == "enum" and not d.choices:
            raise SettingsError(f"setting {d.key}: an enum needs choices")
        try:
            d.check(d.default)
        except InvalidValue as exc:
            raise SettingsError(f"setting {d.key}: its default {d.default!r} does not fit: {exc.message}") from None


def _number(bound: float) -> str:
    """3600000, not 3.6e+06: bounds are read by people."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/@\s:]*:)[^@/\s]*@")
_QUERY_PASSWORD = re.compile(r"(?i)\b(password|passfile|secret|token)=[^&\s]*")


def redacted(value: Any) -> Any:
    """`value` with any password in a URL (`user:pw@`, `?password=`) replaced by `***`: what
    a message or a log line may show of a setting's value."""
    if not isinstance(value, str):
        return value
    return _QUERY_PASSWORD.sub(r"\1=***", _URL_PASSWORD.sub(r"\1***@", value))


def shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, escapes visible (a trailing newline shows as \\n), cut short;
    passwords in URLs redacted."""
    text = redacted(text)
    if len(text) <= limit:
        return repr(text)
    cut = repr(text[:limit])
    return cut[:-1] + "..." + cut[-1]


#: settings the daemon itself reads
CORE_SETTINGS = (
    SettingDef("log.level", "enum", "info", "Least severe log level written to stderr and the log file.",
               choices=("debug", "info", "warning", "error")),
    SettingDef("server.slowRequestMs", "int", 1000,
               "Requests slower than this are logged at warning level with their duration.",
               minimum=1, maximum=3_600_000),
)

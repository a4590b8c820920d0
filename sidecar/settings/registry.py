"""What settings exist: key, type, default, bounds. Capabilities add theirs at start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidecar.errors import InvalidValue

VALUE_PATH = "$.params.value"


@dataclass(frozen=True, slots=True)
class SettingDef:
    key: str
    type: str  # "bool" | "int" | "float" | "string" | "enum"
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 4096

    def check(self, value: Any) -> Any:
        """The value, normalised; InvalidValue when it does not fit this setting."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise InvalidValue(f"{self.key} takes true or false", VALUE_PATH)
            return value
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidValue(f"{self.key} takes a number", VALUE_PATH)
            if self.type == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise InvalidValue(f"{self.key} takes a whole number", VALUE_PATH)
                value = int(value)
            else:
                try:
                    value = float(value)  # an int beyond 1e308 overflows here
                except OverflowError:
                    value = math.inf
                if not math.isfinite(value):
                    raise InvalidValue(f"{self.key} takes a finite number", VALUE_PATH)
            if self.minimum is not None and value < self.minimum:
                raise InvalidValue(f"{self.key} must be at least {_number(self.minimum)}", VALUE_PATH)
            if self.maximum is not None and value > self.maximum:
                raise InvalidValue(f"{self.key} must be at most {_number(self.maximum)}", VALUE_PATH)
            return value
        if not isinstance(value, str):
            raise InvalidValue(f"{self.key} takes a string", VALUE_PATH)
        if self.type == "enum" and self.choices is not None and value not in self.choices:
            raise InvalidValue(f"{self.key} must be one of {', '.join(self.choices)}", VALUE_PATH)
        if len(value) > self.max_length:
            raise InvalidValue(f"{self.key} is longer than {self.max_length} characters", VALUE_PATH)
        return value


def _number(bound: float) -> str:
    """3600000, not 3.6e+06: bounds are read by people."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


#: settings the daemon itself reads
CORE_SETTINGS = (
    SettingDef("log.level", "enum", "info", "Least severe log level written to stderr and the log file.",
               choices=("debug", "info", "warning", "error")),
    SettingDef("server.slowRequestMs", "int", 1000,
               "Requests slower than this are logged at warning level with their duration.",
               minimum=1, maximum=3_600_000),
)

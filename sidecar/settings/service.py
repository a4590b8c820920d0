"""Typed settings with defaults: validated, persisted, overridable, observed.

The value in effect comes from, strongest first: a command-line flag (`overrides_cli`), the
environment (`SIDECAR_<KEY>`, see `registry.env_var`), the stored value, the default.
Overrides are fixed for the daemon's life; `set` still stores a value under one (it takes
effect once the override is gone). After every committed change of a value in effect the
service sends `settings/changed` through the notifier and calls its in-process listeners.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from protocol import settings as p
from sidecar.errors import InvalidValue, NotFound
from sidecar.notifier import Notifier
from sidecar.settings.registry import (
    KEY_PATH,
    SettingDef,
    SettingsError,
    check_key,
    env_var,
    key_problem,
    redacted,
    shown,
    validate_definitions,
)
from sidecar.settings.store import SettingsStore

log = logging.getLogger("sidecar.settings")

Listener = Callable[[str, Any, Any], None]

IMPORT_PATH = "$.params.settings"
#: errors named one by one in the message of a refused import; the rest are counted
ERRORS_SHOWN = 10
_PLAIN_MEMBER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True, slots=True)
class SettingView:
    """A setting as it stands: the value in effect, where it comes from, what is stored."""

    definition: SettingDef
    value: Any
    #: "cli" | "env" | "stored" | "default"
    source: str
    env_var: str
    #: the stored value, or None when nothing is stored (no setting takes null)
    stored: Any

    @property
    def key(self) -> str:
        return self.definition.key

    @property
    def is_default(self) -> bool:
        return self.source == "default"

    @property
    def shadowed_by(self) -> str | None:
        """The override ("cli" or "env") in effect over a stored value; None when none is."""
        return self.source if self.stored is not None and self.source in ("cli", "env") else None


class SettingsService:
    def __init__(self, store: SettingsStore, notifier: Notifier, *,
                 overrides_cli: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        """`overrides_cli`: setting key -> value from a command-line flag (None: no flag; a
        string is parsed as an environment value would be). `environ`: where `SIDECAR_*`
        variables are read (default `os.environ`)."""
        self.store = store
        self.notifier = notifier
        self.definitions: dict[str, SettingDef] = {}
        self._env_vars: dict[str, str] = {}  # variable -> key
        self._stored: dict[str, Any] = {}
        self._overrides: dict[str, tuple[str, Any]] = {}  # key -> (source, value)
        self._overrides_cli = {k: v for k, v in (overrides_cli or {}).items() if v is not None}
        self._environ = os.environ if environ is None else environ
        self._listeners: list[Listener] = []
        self._loaded = False
        self._lock = anyio.Lock()

    # ---- start-up ---------------------------------------------------------------------------

    def register(self, definitions: Iterable[SettingDef]) -> None:
        """Add settings (a capability's `settings` tuple), before `load()`. A duplicate key,
        two keys with one environment variable, or a default that fails its own check raise
        SettingsError."""
        if self._loaded:
            raise SettingsError("settings are registered before load()")
        batch = tuple(definitions)
        validate_definitions(batch)
        added: dict[str, SettingDef] = {}
        variables: dict[str, str] = {}
        for d in batch:
            if d.key in self.definitions or d.key in added:
                raise SettingsError(f"setting {d.key} is registered twice")
            variable = env_var(d.key)
            other = self._env_vars.get(variable) or variables.get(variable)
            if other is not None:
                raise SettingsError(f"settings {other} and {d.key} would share the environment variable {variable}")
            added[d.key] = d
            variables[variable] = d.key
        self.definitions.update(added)
        self._env_vars.update(variables)

    def load(self) -> None:
        """Read stored values (one that no longer fits its definition falls back to the
        default) and check every override: a bad one raises SettingsError naming it."""
        for key, value in self.store.load_all_now().items():
            definition = self.definitions.get(key)
            if definition is None:
                continue  # a setting of a capability this build does not have: keep, ignore
            try:
                self._stored[key] = definition.check(value)
            except Exception:  # noqa: BLE001 - a bad stored value must not stop start-up
                log.warning("stored value of %s is invalid; using the default", key)
        overrides: dict[str, tuple[str, Any]] = {}
        for variable, key in self._env_vars.items():
            text = self._environ.get(variable)
            if text is not None:
                definition = self.definitions[key]
                try:
                    overrides[key] = ("env", definition.parse_text(text))
                except InvalidValue as exc:
                    raise SettingsError(f"environment variable {variable}={shown(text)} is invalid: {exc.message} "
                                        f"(expected {definition.expected()})") from None
        for key, raw in self._overrides_cli.items():
            definition = self.definitions.get(key)
            if definition is None:
                raise SettingsError(f"command-line override of {key}: no such setting")
            try:
                value = definition.parse_text(raw) if isinstance(raw, str) else definition.check(raw)
            except InvalidValue as exc:
                raise SettingsError(f"command-line value {shown(str(raw))} for {key} is invalid: {exc.message} "
                                    f"(expected {definition.expected()})") from None
            overrides[key] = ("cli", value)
        self._overrides = overrides
        self._loaded = True
        for key, (source, value) in sorted(overrides.items()):
            log.info("setting %s is %r from the %s", key, redacted(value),
                     "command line" if source == "cli" else f"environment ({env_var(key)})")

    def subscribe(self, listener: Listener) -> None:
        """`listener(key, value, previous)` after every change of a value in effect."""
        self._listeners.append(listener)

    # ---- reading ----------------------------------------------------------------------------

    def definition(self, key: str, path: str = KEY_PATH) -> SettingDef:
        """The definition; InvalidValue at `path` for a malformed key, NotFound (with close
        matches) for an unknown one."""
        check_key(key, path)
        try:
            return self.definitions[key]
        except KeyError:
            raise self._not_found(key) from None

    def value(self, key: str) -> Any:
        """The value in effect."""
        definition = self.definition(key)
        override = self._overrides.get(key)
        if override is not None:
            return override[1]
        return self._stored.get(key, definition.default)

    def source(self, key: str) -> str:
        self.definition(key)
        override = self._overrides.get(key)
        if override is not None:
            return override[0]
        return "stored" if key in self._stored else "default"

    def is_default(self, key: str) -> bool:
        return self.source(key) == "default"

    def view(self, key: str) -> SettingView:
        definition = self.definition(key)
        return SettingView(definition, self.value(key), self.source(key), env_var(key), self._stored.get(key))

    def views(self) -> list[SettingView]:
        return [self.view(key) for key in sorted(self.definitions)]

    def export(self) -> dict[str, Any]:
        """Every stored value of a known setting, by key (lists as lists)."""
        return {key: _plain(value) for key, value in sorted(self._stored.items())}

    # ---- changing ---------------------------------------------------------------------------

    async def set(self, key: str, value: Any) -> SettingView:
        """Store a value (even under an override, where it is not in effect yet)."""
        definition = self.definition(key)
        value = definition.check(value)
        async with self._lock:
            previous = self.value(key)
            await self.store.put(key, value)
            self._stored[key] = value
            self._announce(key, previous)
        return self.view(key)

    async def reset(self, key: str) -> SettingView:
        """Remove the stored value."""
        self.definition(key)
        async with self._lock:
            if key in self._stored:
                previous = self.value(key)
                await self.store.delete(key)
                del self._stored[key]
                self._announce(key, previous)
        return self.view(key)

    async def import_(self, values: Mapping[str, Any], replace: bool = False) -> list[str]:
        """Store many values: every key and value is checked first, and one bad one refuses
        them all (InvalidValue listing each, at `$.params.settings.<key>`); then all are
        stored in one transaction. `replace` also removes every stored value not in `values`.
        Returns the keys whose stored value was added, changed or removed."""
        checked: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for key, value in values.items():
            path = _member(IMPORT_PATH, key)
            problem = key_problem(key)
            definition = self.definitions.get(key)
            if problem is not None:
                errors.append((path, problem))
            elif definition is None:
                errors.append((path, self._not_found(key).message))
            else:
                try:
                    checked[key] = definition.check(value, path)
                except InvalidValue as exc:
                    errors.append((exc.path, exc.message))
        if errors:
            raise _refused(errors)
        async with self._lock:
            puts = {k: v for k, v in checked.items() if k not in self._stored or self._stored[k] != v}
            deleted = [k for k in self._stored if k not in checked] if replace else []
            changed = sorted([*puts, *deleted])
            if not changed:
                return []
            previous = {k: self.value(k) for k in changed}
            await self.store.put_many(puts, deleted)
            self._stored.update(puts)
            for k in deleted:
                del self._stored[k]
            log.info("imported settings: %s", ", ".join(changed))
            for k in changed:
                self._announce(k, previous[k])
        return changed

    def _announce(self, key: str, previous: Any) -> None:
        """After a commit: tell the shell and the listeners if the value in effect changed."""
        value = self.value(key)
        if value == previous:
            return
        log.info("setting %s changed from %r to %r", key, redacted(previous), redacted(value))
        self.notifier.notify(p.CHANGED, p.SettingChanged(key, _plain(value), _plain(previous)))
        for listener in self._listeners:
            try:
                listener(key, value, previous)
            except Exception:  # noqa: BLE001 - the change is committed; one listener must not undo the rest
                log.exception("a listener of setting %s failed", key)

    def _not_found(self, key: str) -> NotFound:
        matches = difflib.get_close_matches(key, self.definitions, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
        return NotFound(f"no setting named {key}{hint}", key=key, closeMatches=matches)


def _plain(value: Any) -> Any:
    """A list setting's value (a tuple inside the daemon) as JSON-like data."""
    return list(value) if isinstance(value, tuple) else value


def _member(root: str, key: str) -> str:
    """`$.params.settings.log.level`; a key that is no plain name in brackets: `["a b"]`."""
    if _PLAIN_MEMBER.fullmatch(key):
        return f"{root}.{key}"
    return f"{root}[{json.dumps(key)}]"


def _refused(errors: list[tuple[str, str]]) -> InvalidValue:
    if len(errors) == 1:
        path, reason = errors[0]
        return InvalidValue(f"nothing imported: {reason}", path, errors=[{"path": path, "reason": reason}])
    listed = "; ".join(f"{reason} (at {path})" for path, reason in errors[:ERRORS_SHOWN])
    more = f"; and {len(errors) - ERRORS_SHOWN} more" if len(errors) > ERRORS_SHOWN else ""
    return InvalidValue(f"nothing imported, {len(errors)} errors: {listed}{more}", errors[0][0],
                        errors=[{"path": path, "reason": reason} for path, reason in errors])


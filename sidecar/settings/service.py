"""Typed settings with defaults: validated, persisted, cached, observed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from sidecar.errors import NotFound
from sidecar.settings.registry import SettingDef
from sidecar.settings.store import SettingsStore

log = logging.getLogger("sidecar.settings")

Listener = Callable[[str, Any, Any], None]


class SettingsService:
    def __init__(self, store: SettingsStore, definitions: Iterable[SettingDef]) -> None:
        self.store = store
        self.definitions: dict[str, SettingDef] = {d.key: d for d in definitions}
        self._values: dict[str, Any] = {}
        self._listeners: list[Listener] = []

    def load(self) -> None:
        """Read stored values; one that no longer fits its definition falls back to the default."""
        for key, value in self.store.load_all_now().items():
            definition = self.definitions.get(key)
            if definition is None:
                continue  # a setting of a capability this build does not have: keep, ignore
            try:
                self._values[key] = definition.check(value)
            except Exception:  # noqa: BLE001 - a bad stored value must not stop start-up
                log.warning("stored value of %s is invalid; using the default", key)

    def subscribe(self, listener: Listener) -> None:
        """`listener(key, value, previous)` after every change."""
        self._listeners.append(listener)

    def definition(self, key: str) -> SettingDef:
        try:
            return self.definitions[key]
        except KeyError:
            raise NotFound(f"no setting named {key}", key=key) from None

    def value(self, key: str) -> Any:
        definition = self.definition(key)
        return self._values.get(key, definition.default)

    def is_default(self, key: str) -> bool:
        return key not in self._values

    async def set(self, key: str, value: Any) -> Any:
        """Store a new value; returns the previous one."""
        definition = self.definition(key)
        value = definition.check(value)
        previous = self.value(key)
        await self.store.put(key, value)
        self._values[key] = value
        self._changed(key, value, previous)
        return previous

    async def reset(self, key: str) -> Any:
        definition = self.definition(key)
        previous = self.value(key)
        await self.store.delete(key)
        self._values.pop(key, None)
        self._changed(key, definition.default, previous)
        return previous

    def _changed(self, key: str, value: Any, previous: Any) -> None:
        if value == previous:
            return
        log.info("setting %s changed from %r to %r", key, previous, value)
        for listener in self._listeners:
            listener(key, value, previous)

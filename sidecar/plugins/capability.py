"""The plugins capability: WebAssembly plugins in a wasmtime sandbox, offered as tools.

Its lifespan loads the installed plugins, ticks the wasm epoch (deadlines, cancellation)
and polls the plugins' source folders for hot reload. wasmtime is imported on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

from sidecar.capability import Capability, Platform
from sidecar.plugins import handlers
from sidecar.plugins.service import DEFAULTS, PluginService
from sidecar.plugins.store import PluginStore
from sidecar.plugins.toolsource import PluginToolSource
from sidecar.settings.registry import SettingDef

if TYPE_CHECKING:
    from sidecar.server.router import Router

_DESCRIPTIONS = {
    "plugins.defaultFuel": "Fuel (wasm instructions, roughly) per call when a plugin's manifest sets none.",
    "plugins.maxFuel": "The most fuel any plugin call may have, whatever its manifest asks.",
    "plugins.defaultMemoryBytes": "Linear memory per call when a plugin's manifest sets none.",
    "plugins.maxMemoryBytes": "The most linear memory any plugin may have.",
    "plugins.defaultTimeoutMs": "Wall-clock deadline per call when a plugin's manifest sets none.",
    "plugins.maxTimeoutMs": "The longest deadline any plugin call may have.",
    "plugins.httpMaxBytes": "The most response body a plugin's http_fetch returns.",
    "plugins.httpTimeoutMs": "The longest a plugin's http_fetch may take.",
    "plugins.watchIntervalMs": "How often installed plugins' source folders are checked for changes (0: never).",
}


class PluginsCapability(Capability):
    name: ClassVar[str] = "plugins"
    settings: ClassVar[tuple[SettingDef, ...]] = tuple(
        SettingDef(key, "int", default, _DESCRIPTIONS[key], minimum=0 if key == "plugins.watchIntervalMs" else 1,
                   maximum=max(default * 1000, 1 << 40))
        for key, default in DEFAULTS.items())

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        from sidecar.secrets.service import SecretService

        secrets = platform.find(SecretService)
        self.service = PluginService(PluginStore(platform.db), platform.config.data_dir, platform.settings.value,
                                     platform.notifier, secrets.reveal if secrets is not None else None)
        # call plans keep limits derived from settings: a change must reach the next call
        platform.settings.subscribe(self.service.settings_changed)
        platform.provide(self.service)
        platform.tools.add(PluginToolSource(self.service))

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.service.running():
            yield

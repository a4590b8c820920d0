"""system/*: liveness, health, metrics, process facts; the daemon's own settings."""

from __future__ import annotations

from typing import Any

from sidecar import logs
from sidecar.capability import Capability, Platform
from sidecar.server.router import Router
from sidecar.settings.registry import CORE_SETTINGS, SettingDef
from sidecar.system import handlers
from sidecar.system.metrics import Metrics
from sidecar.system.service import Paths, SystemService


#: bounds on what a shell may have the daemon hold; read when the session starts and on change
SESSION_SETTINGS = (
    SettingDef("server.maxPendingRequests", "int", 4096,
               "Requests read and not yet answered, at most; past it a request answers resource_exhausted "
               "(busy) at once instead of waiting.", minimum=64, maximum=1_000_000),
    SettingDef("server.maxQueuedBytes", "int", 64 << 20,
               "Bytes of params held by requests waiting for a free slot or their lane; past it a request "
               "answers resource_exhausted (busy).", minimum=1 << 20, maximum=1 << 34),
)


class SystemCapability(Capability):
    name = "system"
    settings = CORE_SETTINGS + SESSION_SETTINGS

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        config = platform.config
        settings = platform.settings
        self.metrics = Metrics(slow_request_ms=settings.value("server.slowRequestMs"))
        self.service = SystemService(platform.db, Paths(config.data_dir, config.database_path, config.log_path))
        platform.provide(self.metrics)
        platform.provide(self.service)
        logs.set_level(settings.value("log.level"))  # the --log-level flag is the setting's override
        settings.subscribe(self._setting_changed)

    def _setting_changed(self, key: str, value: Any, previous: Any) -> None:
        if key == "log.level":
            logs.set_level(value)
        elif key == "server.slowRequestMs":
            self.metrics.slow_request_ms = value

    def register(self, router: Router) -> None:
        handlers.register(router, self.service, self.metrics)

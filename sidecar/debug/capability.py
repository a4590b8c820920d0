"""debug/*: failure modes on purpose, for tests; only with --debug-methods."""

from __future__ import annotations

from sidecar.capability import Capability
from sidecar.config import DaemonConfig
from sidecar.debug import handlers
from sidecar.server.router import Router


class DebugCapability(Capability):
    name = "debug"

    @classmethod
    def wanted(cls, config: DaemonConfig) -> bool:
        return config.debug_methods

    def register(self, router: Router) -> None:
        handlers.register(router)

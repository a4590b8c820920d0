"""The settings capability: only the `settings/*` handlers. The service itself is part of the
platform (`platform.settings`): the root builds it before any capability, registers every
capability's `settings` tuple, then loads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from sidecar.capability import Capability
from sidecar.settings import handlers

if TYPE_CHECKING:
    from sidecar.server.router import Router


class SettingsCapability(Capability):
    name: ClassVar[str] = "settings"

    def register(self, router: Router) -> None:
        handlers.register(router, self.platform.settings)

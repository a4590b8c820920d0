"""secrets/*: API keys and passwords, encrypted at rest; `SecretService.reveal` for other
capabilities."""

from __future__ import annotations

import functools

from sidecar.capability import Capability, Platform
from sidecar.secrets import handlers
from sidecar.secrets.keys import choose_provider
from sidecar.secrets.service import SecretService
from sidecar.secrets.store import SecretsStore
from sidecar.server.router import Router


class SecretsCapability(Capability):
    name = "secrets"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        config = platform.config
        self.service = SecretService(SecretsStore(platform.db),
                                     functools.partial(choose_provider, config.secrets_backend, config.data_dir))
        platform.provide(self.service)

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

"""agents/*: the registry of agents from the user's folders (`agents.paths`) and the bundled set,
reloaded when a file changes (an mtime poll at most once a second) or the setting changes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from protocol import agents as p
from sidecar.agents import handlers
from sidecar.agents.service import AgentsService, ReloadReport
from sidecar.capability import Capability, Platform
from sidecar.server.router import Router
from sidecar.settings.registry import SettingDef

log = logging.getLogger("sidecar.agents")

#: how often the folders are checked for changed files
POLL_SECONDS = 1.0


class AgentsCapability(Capability):
    name = "agents"
    settings = (
        SettingDef("agents.paths", "list", (),
                   "Folders of agent Markdown files, searched recursively; they take precedence over the "
                   "bundled agents, the first folder over later ones.", max_items=64, max_length=4096),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        self.service = AgentsService(lambda: list(platform.settings.value("agents.paths")),
                                     on_change=self._changed)
        platform.provide(self.service)
        self._wake: anyio.Event | None = None  # made in lifespan(), on the event loop
        platform.settings.subscribe(self._setting_changed)

    def _changed(self, report: ReloadReport) -> None:
        log.info("agents reloaded: %d agents, %d problems (+%d -%d ~%d)", report.count, report.problems,
                 len(report.added), len(report.removed), len(report.changed))
        self.platform.notifier.notify(p.CHANGED, handlers.changed_event(report))

    def _setting_changed(self, key: str, value: Any, previous: Any) -> None:
        if key == "agents.paths" and self._wake is not None:
            self._wake.set()

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    async def _watch(self) -> None:
        while True:
            wake = self._wake = anyio.Event()
            with anyio.move_on_after(POLL_SECONDS):
                await wake.wait()
            forced = wake.is_set()
            if not self.service.loaded:
                continue  # nothing asked for agents yet: no need to watch (or to import YAML)
            try:
                if forced:
                    await self.service.reload()
                else:
                    await self.service.poll()
            except Exception:  # noqa: BLE001 - a failed poll must not stop watching
                log.exception("agent folders could not be checked")

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        # the registry loads on first use (a few ms for the bundled set), not at start-up:
        # start-up stays fast and imports no YAML parser
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch)
            yield
            tg.cancel_scope.cancel()

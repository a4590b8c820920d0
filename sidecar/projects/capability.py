"""projects/*, conversations/*: projects, files, conversations and messages in the embedded
database, with full-text search; `ProjectsService` for chat to write messages as they stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from sidecar.capability import Capability, Platform
from sidecar.projects import handlers
from sidecar.projects.service import Limits, ProjectsService
from sidecar.server.router import Router
from sidecar.settings.registry import SettingDef

MIB = 1024 * 1024


class ProjectsCapability(Capability):
    name = "projects"
    settings = (
        SettingDef("projects.maxFileBytes", "int", 10 * MIB, "The largest file a project may hold, in bytes.",
                   minimum=1, maximum=1024 * MIB),
        SettingDef("projects.maxProjectBytes", "int", 200 * MIB,
                   "The most bytes of files one project may hold, in bytes.", minimum=1, maximum=64 * 1024 * MIB),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        settings = platform.settings
        self.service = ProjectsService(platform.db, lambda: Limits(settings.value("projects.maxFileBytes"),
                                                                   settings.value("projects.maxProjectBytes")))
        platform.provide(self.service)

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self.service.recover()  # replies cut off by a crash: "streaming" -> "incomplete"
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.service.run_indexer)  # messages reach the search indexes in batches
            yield
            tg.cancel_scope.cancel()

"""The scheduler capability: durable jobs on the embedded SQLite database, or, in team mode
(`team.databaseUrl` set), on a PostgreSQL database that several daemons share.

Its lifespan opens the job store (team mode: an asyncpg pool, and the store's own
migrations) and runs the scheduler loop and the lease renewer in its own task group.
asyncpg is imported only in team mode.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, ClassVar

from sidecar.capability import Capability, Platform
from sidecar.errors import InvalidValue
from sidecar.scheduler import handlers
from sidecar.scheduler.jobstore import JobStore
from sidecar.scheduler.pg_store import PASSWORD_SECRET, url_has_password
from sidecar.scheduler.service import SchedulerService
from sidecar.scheduler.store import SqliteJobStore
from sidecar.settings.registry import VALUE_PATH, SettingDef

if TYPE_CHECKING:
    from sidecar.server.router import Router

log = logging.getLogger("sidecar.scheduler")

#: the secret holding the team database's password; the URL may not hold one
TEAM_PASSWORD_SECRET = PASSWORD_SECRET


class TeamUrlSetting(SettingDef):
    """`team.databaseUrl`, refusing a URL with a password in it: settings are stored and shown
    in clear, so the password goes in the secret store. The message never quotes the value."""

    __slots__ = ()

    def check(self, value: object, path: str = VALUE_PATH) -> object:
        value = SettingDef.check(self, value, path)  # no zero-argument super() in a slots dataclass
        if isinstance(value, str) and url_has_password(value):
            raise InvalidValue(f"{self.key} must not hold a password (user:password@, ?password=, ?passfile=): "
                               f"store it with secrets/set as {PASSWORD_SECRET}", path)
        return value


class SchedulerCapability(Capability):
    name: ClassVar[str] = "scheduler"
    settings: ClassVar[tuple[SettingDef, ...]] = (
        TeamUrlSetting("team.databaseUrl", "string", "",
                   "Team mode: a PostgreSQL URL (postgresql://user@host:5432/db) where scheduled jobs and "
                   "their history live, shared by several daemons; empty: the embedded database. The password "
                   f"comes from the secret {TEAM_PASSWORD_SECRET} (read for each new connection), never from the "
                   "URL. Read at start-up."),
        SettingDef("scheduler.pollSeconds", "float", 60.0,
                   "The longest the scheduler sleeps before it looks at the clock and the job store again "
                   "(team mode: how soon it sees jobs made by another daemon).", minimum=0.05, maximum=60.0),
        SettingDef("scheduler.leaseSeconds", "float", 30.0,
                   "How long a running job's lease lasts unless renewed: after a daemon dies, another one "
                   "runs its job again this long after its last renewal. Read at start-up.",
                   minimum=0.5, maximum=3600.0),
    )

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        settings = platform.settings
        url = settings.value("team.databaseUrl").strip()
        store: JobStore
        if url:
            from sidecar.scheduler.pg_store import PgJobStore

            store = PgJobStore(url, password=self._team_password)
        else:
            store = SqliteJobStore(platform.db)
        self.service = SchedulerService(store, platform.notifier, tools=platform.tools, find=platform.find,
                                        poll_seconds=settings.value("scheduler.pollSeconds"),
                                        lease_seconds=settings.value("scheduler.leaseSeconds"))
        settings.subscribe(self._setting_changed)
        platform.provide(self.service)

    async def _team_password(self) -> str | None:
        """The secret's value; None when it is not set (or this build has no secret store)."""
        from sidecar.errors import NotFound
        from sidecar.secrets.service import SecretService

        secrets = self.platform.find(SecretService)
        if secrets is None:
            return None
        try:
            return await secrets.reveal(TEAM_PASSWORD_SECRET)
        except NotFound:
            return None

    def _setting_changed(self, key: str, value: object, previous: object) -> None:
        if key == "scheduler.pollSeconds":
            self.service.poll_seconds = float(value)  # type: ignore[arg-type]
            self.service.wake()
        elif key == "team.databaseUrl":
            log.warning("team.databaseUrl changed: the scheduler uses it from the next start")

    def register(self, router: Router) -> None:
        handlers.register(router, self.service)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with self.service.running():
            yield

"""The composition root: the list of capabilities, and serving one session on stdio.

Adding a capability is one line in `CAPABILITIES` (see the README, "Adding a capability").
The order matters only for services: a capability may `require` what an earlier one
`provide`d.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import apsw

from sidecar import logs
from sidecar.capability import Capability, Platform
from sidecar.children import CHILDREN
from sidecar.config import DaemonConfig
from sidecar.agents.capability import AgentsCapability
from sidecar.debug.capability import DebugCapability
from sidecar.events.capability import EventsCapability
from sidecar.llm.capability import ChatCapability
from sidecar.notifier import Notifier
from sidecar.plugins.capability import PluginsCapability
from sidecar.projects.capability import ProjectsCapability
from sidecar.scheduler.capability import SchedulerCapability
from sidecar.secrets.capability import SecretsCapability
from sidecar.server.lifeline import (
    ParentWatch,
    arm_parent_death_signal,
    hold_parent_death_signal,
    terminate_descendants,
    watch_signals,
)
from sidecar.server.router import Router
from sidecar.server.session import Session, SessionConfig
from sidecar.server.stdio import FdWriter, claim_stdout, open_reader
from sidecar.settings.capability import SettingsCapability
from sidecar.settings.registry import SettingsError
from sidecar.settings.service import SettingsService
from sidecar.settings.store import SettingsStore
from sidecar.store.database import Database
from sidecar.store.migrations import MigrationError
from sidecar.system.capability import SystemCapability
from sidecar.workflows.capability import WorkflowsCapability
from sidecar.voice.capability import VoiceCapability
from sidecar.system.metrics import Metrics

log = logging.getLogger("sidecar")

#: every capability of the daemon, in the order they are built and started
CAPABILITIES: tuple[type[Capability], ...] = (
    SystemCapability,
    SettingsCapability,
    SecretsCapability,
    DebugCapability,
    AgentsCapability,
    ProjectsCapability,
    PluginsCapability,
    ChatCapability,
    SchedulerCapability,
    EventsCapability,
    WorkflowsCapability,
    VoiceCapability,
)


def run(config: DaemonConfig) -> int:
    """Serve on stdio until stdin closes, `exit`, a signal, or the parent dies."""
    # owner only: it holds the database, the log and possibly the secrets key
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fds = claim_stdout()
    logs.setup(config.log_path, config.log_level or "info")
    parent_pid = config.parent_pid if config.parent_pid is not None else os.getppid()
    armed = config.watch_parent and parent_pid == os.getppid() and arm_parent_death_signal()
    try:
        return anyio.run(_serve, config, fds.read_fd, fds.write_fd, parent_pid)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 2
    finally:
        if armed:
            hold_parent_death_signal()  # the loop's handler is gone; its default action would kill us here
        terminate_descendants()
        logs.shutdown()


class StartupError(Exception):
    """The daemon cannot serve at all (e.g. its database is unusable): one log line, exit 2."""


def build(config: DaemonConfig, db: Database, notifier: Notifier,
          capabilities: tuple[type[Capability], ...] = CAPABILITIES) -> tuple[Platform, list[Capability], Router]:
    """Every capability of this build, built and registered on one router."""
    chosen = [cls for cls in capabilities if cls.wanted(config)]
    settings = SettingsService(SettingsStore(db), notifier, overrides_cli={"log.level": config.log_level})
    for cls in chosen:
        settings.register(cls.settings)
    try:
        settings.load()
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
    platform = Platform(config=config, db=db, settings=settings, notifier=notifier)
    built = [cls(platform) for cls in chosen]
    router = Router()
    for capability in built:
        capability.register(router)
    return platform, built, router


@asynccontextmanager
async def running(platform: Platform, capabilities: list[Capability]) -> AsyncIterator[None]:
    """Every capability's lifespan, entered in order and left in reverse; then the shared
    HTTP client closes (after every lifespan that may use it)."""
    async with AsyncExitStack() as lifespans:
        lifespans.push_async_callback(platform.http.aclose)
        for capability in capabilities:
            await lifespans.enter_async_context(capability.lifespan())
        yield


def session_config(config: DaemonConfig, platform: Platform) -> SessionConfig:
    settings = platform.settings
    return SessionConfig(max_message_bytes=config.max_message_bytes, max_concurrency=config.max_concurrency,
                         max_pending=settings.value("server.maxPendingRequests"),
                         max_queued_bytes=settings.value("server.maxQueuedBytes"))


def _session_setting_changed(session: Session, key: str, value: object, previous: object) -> None:
    if key == "server.maxPendingRequests":
        session.config.max_pending = value  # type: ignore[assignment]
    elif key == "server.maxQueuedBytes":
        session.config.max_queued_bytes = value  # type: ignore[assignment]


async def _serve(config: DaemonConfig, read_fd: int, write_fd: int, parent_pid: int) -> int:
    db = Database(config.database_path, config.migrations_dir)
    try:
        try:
            db.open()
        except MigrationError as exc:
            raise StartupError(str(exc)) from None
        except (apsw.Error, OSError) as exc:
            # a corrupt or foreign file, a read-only directory...: say which file, not a traceback
            raise StartupError(f"cannot open the database {config.database_path}: {exc}") from None
        notifier = Notifier()
        platform, capabilities, router = build(config, db, notifier)
        reader = open_reader(read_fd)
        writer = FdWriter(write_fd)
        session = Session(router, reader, writer.write, session_config(config, platform),
                          platform.require(Metrics), try_write=None if writer.threaded else writer.try_write,
                          notifier=notifier)
        platform.settings.subscribe(functools.partial(_session_setting_changed, session))
        try:
            async with anyio.create_task_group() as tg:
                # listening before serving: a signal in between would otherwise go unseen
                await tg.start(watch_signals, session.stop)
                if config.watch_parent:
                    await tg.start(ParentWatch(parent_pid).watch, session.stop)
                async with running(platform, capabilities):
                    log.info("sidecar serving on stdio (pid %d, data dir %s)", os.getpid(), config.data_dir)
                    code = await session.serve()
                    await CHILDREN.terminate_all()
                    # children go while our signal handlers still stand: once the task group
                    # ends, a SIGTERM would kill us with its default action and orphan them
                    await anyio.to_thread.run_sync(terminate_descendants)
                tg.cancel_scope.cancel()
        finally:
            writer.restore()
            notifier.detach()
        log.info("exiting with code %d (%s)", code, session.stop_reason)
        return code
    finally:
        db.close()

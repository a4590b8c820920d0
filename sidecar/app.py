"""The composition root: build every service, wire handlers, serve one session on stdio."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import anyio
import apsw

from sidecar import logs
from sidecar.config import DaemonConfig
from sidecar.secrets import handlers as secrets_handlers
from sidecar.secrets.keys import choose_provider
from sidecar.secrets.service import SecretService
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
from sidecar.settings import handlers as settings_handlers
from sidecar.settings.registry import CORE_SETTINGS
from sidecar.settings.service import SettingsService
from sidecar.store.database import Database
from sidecar.store.migrations import MigrationError
from sidecar.secrets.store import SecretsStore
from sidecar.settings.store import SettingsStore
from sidecar.system import handlers as system_handlers
from sidecar.system.metrics import Metrics
from sidecar.system.service import Paths, SystemService

log = logging.getLogger("sidecar")


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


class StartupError(Exception):
    """The daemon cannot serve at all (e.g. its database is unusable): one log line, exit 2."""


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
        router = Router()
        metrics = _wire(router, config, db)
        reader = open_reader(read_fd)
        writer = FdWriter(write_fd)
        session = Session(router, reader, writer.write, SessionConfig(
            max_message_bytes=config.max_message_bytes, max_concurrency=config.max_concurrency), metrics,
            try_write=None if writer.threaded else writer.try_write)
        log.info("sidecar serving on stdio (pid %d, data dir %s)", os.getpid(), config.data_dir)
        try:
            async with anyio.create_task_group() as tg:
                # listening before serving: a signal in between would otherwise go unseen
                await tg.start(watch_signals, session.stop)
                if config.watch_parent:
                    await tg.start(ParentWatch(parent_pid).watch, session.stop)
                code = await session.serve()
                # children go while our signal handlers still stand: once the task group
                # ends, a SIGTERM would kill us with its default action and orphan them
                await anyio.to_thread.run_sync(terminate_descendants)
                tg.cancel_scope.cancel()
        finally:
            writer.restore()
        log.info("exiting with code %d (%s)", code, session.stop_reason)
        return code
    finally:
        db.close()


def _wire(router: Router, config: DaemonConfig, db: Database) -> Metrics:
    settings = SettingsService(SettingsStore(db), CORE_SETTINGS)
    settings.load()
    metrics = Metrics(slow_request_ms=settings.value("server.slowRequestMs"))
    if config.log_level is None:
        logs.set_level(settings.value("log.level"))

    def on_change(key: str, value: Any, previous: Any) -> None:
        if key == "log.level" and config.log_level is None:
            logs.set_level(value)
        elif key == "server.slowRequestMs":
            metrics.slow_request_ms = value

    settings.subscribe(on_change)
    system = SystemService(db, Paths(config.data_dir, config.database_path, config.log_path))
    secrets = SecretService(SecretsStore(db), functools.partial(choose_provider, config.secrets_backend, config.data_dir))

    system_handlers.register(router, system, metrics)
    settings_handlers.register(router, settings)
    secrets_handlers.register(router, secrets)
    if config.debug_methods:
        from sidecar.debug import handlers as debug_handlers

        debug_handlers.register(router)
    return metrics

"""The one shape every capability has, and what the composition root hands each of them.

A capability is a class with a `name`, the `settings` it contributes, `register(router)`
for its handlers, and an async `lifespan()` in which it owns whatever it keeps open
(clients, pools, watchers, loops, background tasks in its own task group). The root
(`sidecar/app.py`) builds every capability listed in `CAPABILITIES` in order, registers
their handlers, enters their lifespans in order before serving, and leaves them in reverse
order before the database closes. Heavy libraries are imported inside the capability on
first use, never at import time of its module.

Capabilities talk to each other through services, found with `platform.require(Type)`
(a capability `provide`s its service in `__init__`, so later ones in the list can use it),
and through the `ToolSource` interface (`sidecar/toolsource.py`); never through JSON-RPC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sidecar.config import DaemonConfig
from sidecar.http import SharedHttp
from sidecar.notifier import Notifier
from sidecar.settings.registry import SettingDef
from sidecar.store.database import Database
from sidecar.toolsource import ToolRegistry

if TYPE_CHECKING:
    from sidecar.server.router import Router
    from sidecar.settings.service import SettingsService

T = TypeVar("T")


@dataclass(slots=True)
class Platform:
    """The daemon's shared parts, built by the composition root before any capability."""

    config: DaemonConfig
    db: Database
    settings: SettingsService
    notifier: Notifier
    #: every capability's tools, for the chat tool loop and workflow steps
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    #: the shared HTTP client, made on first use (`await platform.http.client()`)
    http: SharedHttp = field(default_factory=SharedHttp)
    _services: dict[type, Any] = field(default_factory=dict)

    def provide(self, service: object, as_type: type | None = None) -> None:
        """Make `service` findable by its type (or `as_type`) for capabilities built later."""
        key = as_type or type(service)
        if key in self._services:
            raise ValueError(f"a {key.__name__} is already provided")
        self._services[key] = service

    def require(self, service_type: type[T]) -> T:
        """The service of this type; a capability listed earlier must have provided it."""
        try:
            return self._services[service_type]  # type: ignore[no-any-return]
        except KeyError:
            raise LookupError(f"no {service_type.__name__}: is its capability listed before this one?") from None

    def find(self, service_type: type[T]) -> T | None:
        """The service of this type, or None when its capability is not in this build."""
        return self._services.get(service_type)

    def find_named(self, module: str, name: str) -> Any:
        """`find` for a service named by module and class, so the caller need not import a
        capability that may not be in this build (nor pay its import before first use)."""
        service_type = service_type_named(module, name)
        return None if service_type is None else self.find(service_type)


def service_type_named(module: str, name: str) -> type | None:
    """The class `name` of `module`, or None when that module is not in this build."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None


class Capability:
    """Subclass, set `name` (and `settings`), build services in `__init__`, wire handlers in
    `register`, and own long-lived resources in `lifespan`."""

    name: ClassVar[str]
    #: settings this capability reads; registered before any capability is built
    settings: ClassVar[tuple[SettingDef, ...]] = ()

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    @classmethod
    def wanted(cls, config: DaemonConfig) -> bool:
        """Whether this build of the daemon includes the capability (e.g. debug/* only
        with --debug-methods)."""
        return True

    def register(self, router: Router) -> None:
        """Add this capability's handlers (thin: decode, call the service, encode)."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open what the capability keeps for the daemon's life; close it after the yield.
        Background tasks belong in a task group opened here and cancelled after the yield."""
        yield

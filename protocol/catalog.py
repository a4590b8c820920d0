"""Every method and notification of the protocol, gathered from the namespace modules."""

from __future__ import annotations

from protocol import debug, lifecycle, secrets, settings, system
from protocol.spec import MethodSpec, NotificationSpec

_MODULES = (lifecycle, system, settings, secrets, debug)

METHODS: tuple[MethodSpec, ...] = tuple(m for mod in _MODULES for m in mod.METHODS)
NOTIFICATIONS: tuple[NotificationSpec, ...] = tuple(n for mod in _MODULES for n in mod.NOTIFICATIONS)

"""Every method and notification of the protocol, gathered from the namespace modules."""

from __future__ import annotations

from protocol import agents, debug, lifecycle, plugins, projects, scheduler, secrets, settings, system
from protocol import events, workflows
from protocol import llm
from protocol import voice
from protocol.spec import MethodSpec, NotificationSpec

#: every namespace module, by name: add a new namespace here and nowhere else
NAMESPACES = {"lifecycle": lifecycle, "system": system, "settings": settings, "secrets": secrets, "plugins": plugins,
              "agents": agents, "projects": projects, "scheduler": scheduler, "events": events,
              "workflows": workflows, "llm": llm, "voice": voice, "debug": debug}

METHODS: tuple[MethodSpec, ...] = tuple(m for mod in NAMESPACES.values() for m in mod.METHODS)
NOTIFICATIONS: tuple[NotificationSpec, ...] = tuple(n for mod in NAMESPACES.values() for n in mod.NOTIFICATIONS)

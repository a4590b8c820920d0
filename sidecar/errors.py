"""Errors a service raises. Each carries a `kind`; the RPC edge maps kinds to codes.

Services raise these and know nothing of JSON-RPC. Messages must be safe to show a user:
never put a secret, a password or a raw exception text from a library in one.
"""

from __future__ import annotations

from typing import Any


class SidecarError(Exception):
    kind = "application"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or None


class NotFound(SidecarError):
    kind = "not_found"


class PermissionDenied(SidecarError):
    kind = "permission_denied"


class RateLimited(SidecarError):
    kind = "rate_limited"


class ProviderError(SidecarError):
    kind = "provider_error"


class PluginTrap(SidecarError):
    kind = "plugin_trap"


class ResourceExhausted(SidecarError):
    kind = "resource_exhausted"


class Timeout(SidecarError):
    kind = "timeout"


class Conflict(SidecarError):
    kind = "conflict"


class Unavailable(SidecarError):
    kind = "unavailable"


class InvalidValue(SidecarError):
    """A value that passed type checks but breaks a rule; answered as invalid params."""

    kind = "invalid_params"

    def __init__(self, message: str, path: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.path = path

"""Error codes and the typed `error.data` every error carries.

Standard JSON-RPC codes, the two LSP codes shells already know, and application codes in
-32000..-32099. Each application code has one `kind`; shells branch on `data.kind`.
"""

from __future__ import annotations

from typing import Any

import msgspec

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_NOT_INITIALIZED = -32002  # as LSP
REQUEST_CANCELLED = -32800  # as LSP

#: application error kinds and their codes (-32000..-32099)
APPLICATION_CODES: dict[str, int] = {
    "application": -32000,
    "not_found": -32001,
    "not_initialized": SERVER_NOT_INITIALIZED,
    "permission_denied": -32003,
    "rate_limited": -32004,
    "provider_error": -32005,
    "plugin_trap": -32006,
    "resource_exhausted": -32007,
    "timeout": -32008,
    "conflict": -32009,
    "unavailable": -32011,
}

#: after `shutdown`, requests answer -32600 (as LSP prescribes) with this kind
SHUTTING_DOWN_KIND = "shutting_down"

#: kinds used with the standard codes
PROTOCOL_KINDS: dict[int, str] = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal",
    REQUEST_CANCELLED: "cancelled",
}


class ErrorData(msgspec.Struct, omit_defaults=True):
    """`error.data`: always a `kind`; the other fields depend on it."""

    kind: str
    #: invalid_params: where in the request the offending value sits, e.g. "$.params.count"
    path: str | None = None
    #: invalid_params: what was wrong with it
    reason: str | None = None
    #: internal: quote it when reporting; the traceback is in the daemon's log under it
    incidentId: str | None = None
    #: method_not_found: the name asked for
    method: str | None = None
    #: resource_exhausted (oversized message): the limit and the size seen, in bytes
    limit: int | None = None
    size: int | None = None
    #: anything else a capability adds (resource names, retry hints, ...)
    details: dict[str, Any] | None = None


class ErrorObject(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: ErrorData | None = None

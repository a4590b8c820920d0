"""Turning exceptions into wire errors: typed, opaque where they must be, logged once."""

from __future__ import annotations

import logging
import re
import secrets

import msgspec

from protocol.errors import (
    APPLICATION_CODES,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    PROTOCOL_KINDS,
    REQUEST_CANCELLED,
    ErrorData,
    ErrorObject,
)
from sidecar.errors import InvalidValue, SidecarError

log = logging.getLogger("sidecar.server")

_STANDARD_MESSAGES = {
    -32700: "Parse error",
    -32600: "Invalid request",
    -32601: "Method not found",
    -32602: "Invalid params",
    -32603: "Internal error",
    -32800: "Request cancelled",
}

_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)


class ProtocolFailure(Exception):
    """Raised by server-level handlers to answer exactly this error."""

    def __init__(self, error: ErrorObject) -> None:
        super().__init__(error.message)
        self.error = error


def protocol_error(code: int, message: str | None = None, **data: object) -> ErrorObject:
    kind = str(data.pop("kind", None) or PROTOCOL_KINDS.get(code, "application"))
    return ErrorObject(code, message or _STANDARD_MESSAGES.get(code, "Error"), ErrorData(kind=kind, **data))  # type: ignore[arg-type]


def invalid_params(exc: msgspec.ValidationError, root: str = "$.params") -> ErrorObject:
    """msgspec says "Expected `int`, got `str` - at `$.count`"; we answer the path and reason."""
    match = _AT_PATH.match(str(exc))
    assert match is not None
    reason = match["reason"]
    path = match["path"] or "$"
    path = root + path[1:]
    named = re.match(r"Object (?:contains unknown|missing required) field `(.*)`", reason)
    if named:
        path = f"{path}.{named[1]}"
    return ErrorObject(INVALID_PARAMS, f"Invalid params: {reason} at {path}",
                       ErrorData(kind="invalid_params", path=path, reason=reason))


def cancelled() -> ErrorObject:
    return protocol_error(REQUEST_CANCELLED)


def _typed_leaf(exc: BaseException) -> BaseException | None:
    """The first ProtocolFailure or SidecarError in an exception group, depth first in the
    order the group holds them (a handler's own task group may raise several: the first
    typed one answers; the others are logged with the incident when there is one)."""
    if isinstance(exc, (ProtocolFailure, SidecarError)):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _typed_leaf(inner)
            if found is not None:
                return found
    return None


def from_exception(exc: BaseException, method: str) -> ErrorObject:
    """A service error keeps its kind and message, even when raised inside a handler's own
    task group (unwrapped from the exception group); anything else becomes an opaque
    internal error whose traceback goes to the log only, under an incident id."""
    if isinstance(exc, BaseExceptionGroup):
        leaf = _typed_leaf(exc)
        if leaf is not None:
            if len(exc.exceptions) > 1:
                log.info("%s raised %d errors at once; answering the first typed one", method,
                         len(exc.exceptions), exc_info=exc)
            exc = leaf
    if isinstance(exc, ProtocolFailure):
        return exc.error
    if isinstance(exc, InvalidValue):
        return ErrorObject(INVALID_PARAMS, f"Invalid params: {exc.message} at {exc.path}",
                           ErrorData(kind="invalid_params", path=exc.path, reason=exc.message, details=exc.details))
    if isinstance(exc, SidecarError):
        code = APPLICATION_CODES.get(exc.kind, APPLICATION_CODES["application"])
        return ErrorObject(code, exc.message, ErrorData(kind=exc.kind, details=exc.details))
    incident = secrets.token_hex(6)
    log.error("internal error in %s, incident %s", method, incident, exc_info=exc)
    return ErrorObject(INTERNAL_ERROR, f"Internal error (incident {incident})",
                       ErrorData(kind="internal", incidentId=incident))

"""Lifecycle as LSP and MCP: initialize -> initialized -> ... -> shutdown -> exit.

`gate` says which methods a session accepts in each state; `register` adds the lifecycle
methods and `$/cancelRequest`, which act on the session itself.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from protocol import PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS
from protocol.errors import INVALID_PARAMS, INVALID_REQUEST, SERVER_NOT_INITIALIZED, SHUTTING_DOWN_KIND, ErrorObject
from protocol.lifecycle import (
    CANCEL_REQUEST,
    EXIT,
    INITIALIZE,
    INITIALIZED,
    SHUTDOWN,
    CancelParams,
    Empty,
    InitializeParams,
    InitializeResult,
)
from sidecar.server import errors
from sidecar.server.context import RequestContext
from sidecar.server.router import Router

if TYPE_CHECKING:
    from sidecar.server.session import Session

log = logging.getLogger("sidecar.server")

_BEFORE_INITIALIZE = frozenset({INITIALIZE.name, EXIT.name, CANCEL_REQUEST.name})
_AFTER_SHUTDOWN = frozenset({EXIT.name, CANCEL_REQUEST.name})


def gate(state: str, method: str) -> ErrorObject | None:
    """The error for a method the session does not accept in `state`, else None."""
    if state == "new" and method not in _BEFORE_INITIALIZE:
        return errors.protocol_error(SERVER_NOT_INITIALIZED, "Server not initialized: send initialize first",
                                     kind="not_initialized")
    if state == "shutdown" and method not in _AFTER_SHUTDOWN:
        return errors.protocol_error(INVALID_REQUEST, "Server is shutting down: only exit is accepted",
                                     kind=SHUTTING_DOWN_KIND)
    return None


def check_protocol_version(asked: str | None) -> None:
    """Negotiation as MCP does it: the daemon answers with the version it speaks, and a
    client that cannot speak that one disconnects. A version the daemon can never speak
    (malformed, or older than the oldest it supports) is refused here, clearly."""
    if asked is None or asked in SUPPORTED_PROTOCOL_VERSIONS:
        return
    speaks = ", ".join(SUPPORTED_PROTOCOL_VERSIONS)
    if not _is_date_version(asked):
        reason = f"protocol versions are dates like {PROTOCOL_VERSION}; this daemon speaks {speaks}"
    elif asked < SUPPORTED_PROTOCOL_VERSIONS[0]:
        reason = f"protocol version {asked} is older than this daemon supports; it speaks {speaks}"
    else:
        return  # newer: we answer ours, the client decides
    raise errors.ProtocolFailure(errors.protocol_error(
        INVALID_PARAMS, f"Unsupported protocol version: {reason}"[:300], path="$.params.protocolVersion",
        reason=reason[:300]))


def _is_date_version(text: str) -> bool:
    parts = text.split("-")
    return len(text) == 10 and len(parts) == 3 and all(p.isdigit() for p in parts) and \
        [len(p) for p in parts] == [4, 2, 2]


def register(router: Router, session: Session) -> None:
    @router.method(INITIALIZE, inline=True)
    def initialize(ctx: RequestContext, params: InitializeParams) -> InitializeResult:
        if session.state != "new":
            raise errors.ProtocolFailure(errors.protocol_error(
                INVALID_REQUEST, "Already initialized", reason="initialize was already called"))
        check_protocol_version(params.protocolVersion)
        session.state = "initialized"
        session.client_info = msgspec.to_builtins(params.clientInfo) if params.clientInfo else None
        log.info("initialized by %s", session.client_info or "an unnamed client")
        return session.offered()

    @router.notification(INITIALIZED)
    def initialized(ctx: RequestContext, params: Empty) -> None:
        session.client_ready()

    @router.method(SHUTDOWN, inline=True)
    def shutdown(ctx: RequestContext, params: Empty) -> None:
        session.state = "shutdown"
        return None

    @router.notification(EXIT)
    def exit_(ctx: RequestContext, params: Empty) -> None:
        session.exit_code = 0 if session.state == "shutdown" else 1
        session.stop("exit")

    @router.notification(CANCEL_REQUEST)
    def cancel_request(ctx: RequestContext, params: CancelParams) -> None:
        session.cancel(params.id)

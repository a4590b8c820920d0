"""Lifecycle as LSP and MCP: initialize -> initialized -> ... -> shutdown -> exit."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.common import Empty
from protocol.jsonrpc import RequestId
from protocol.spec import MethodSpec, NotificationSpec


class ClientInfo(msgspec.Struct):
    name: str
    version: str | None = None


class InitializeParams(msgspec.Struct, omit_defaults=True):
    clientInfo: ClientInfo | None = None
    protocolVersion: str | None = None
    capabilities: dict[str, Any] = {}


class ServerInfo(msgspec.Struct):
    name: str
    version: str


class ServerCapabilities(msgspec.Struct):
    #: "ndjson" or "content-length": the framing this session was detected to use
    framing: str
    maxMessageBytes: int
    maxConcurrency: int
    #: requests that touch shared state run in arrival order (see README, "Ordering")
    orderedMethods: list[str]
    #: the ordering lane of each ordered method: methods in one lane run one after another
    lanes: dict[str, str] = {}
    #: requests read and not yet answered, at most; past it requests answer resource_exhausted
    maxPendingRequests: int = 4096
    #: protocol versions this daemon speaks, oldest first
    protocolVersions: list[str] = []


class InitializeResult(msgspec.Struct):
    protocolVersion: str
    serverInfo: ServerInfo
    methods: list[str]
    notifications: list[str]
    capabilities: ServerCapabilities


class CancelParams(msgspec.Struct):
    id: RequestId


INITIALIZE = MethodSpec("initialize", InitializeParams, InitializeResult,
                        "Start a session: client info in, server info and the method list out.")
SHUTDOWN = MethodSpec("shutdown", Empty, None,
                      "Stop accepting requests; answer null. `exit` follows.")

INITIALIZED = NotificationSpec("initialized", Empty, "The client has processed the initialize result.",
                               direction="client")
EXIT = NotificationSpec("exit", Empty, "Exit now: code 0 after shutdown, 1 without.", direction="client")
CANCEL_REQUEST = NotificationSpec("$/cancelRequest", CancelParams,
                                  "Cancel the request with this id; it answers -32800.", direction="client")

METHODS = (INITIALIZE, SHUTDOWN)
NOTIFICATIONS = (INITIALIZED, EXIT, CANCEL_REQUEST)

"""JSON-RPC 2.0 envelopes as they cross the wire."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from protocol.errors import ErrorObject

RequestId = int | str
"""JSON-RPC ids: integers of any size or strings (null only on error responses)."""


class Envelope(msgspec.Struct):
    """An incoming request (with `id`) or notification (without)."""

    jsonrpc: Literal["2.0"]
    method: str
    params: dict[str, Any] | list[Any] | UnsetType = UNSET
    id: RequestId | None | UnsetType = UNSET


class SuccessResponse(msgspec.Struct, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RequestId | None
    result: Any


class ErrorResponse(msgspec.Struct, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    id: RequestId | None
    error: ErrorObject


class Notification(msgspec.Struct, kw_only=True):
    jsonrpc: Literal["2.0"] = "2.0"
    method: str
    params: Any

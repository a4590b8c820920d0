"""The fields every streamed notification carries, tying it to the request it serves."""

from __future__ import annotations

import msgspec

from protocol.jsonrpc import RequestId


class StreamEvent(msgspec.Struct, kw_only=True):
    """Base of every streamed notification: `requestId` names the open request and `seq`
    counts from 0, so a shell can order and de-duplicate what it receives."""

    requestId: RequestId
    seq: int

"""The fields every streamed notification carries, tying it to the request it serves."""

from __future__ import annotations

import msgspec

from protocol.jsonrpc import RequestId


class StreamEvent(msgspec.Struct, kw_only=True):
    """Base of every streamed notification: `requestId` names the open request and `seq`
    counts from 0, so a shell can order and de-duplicate what it receives.

    A handler builds the event without them; the server's stream fills both in before
    sending, so on the wire they are always present (the schema marks them required)."""

    requestId: RequestId = 0
    seq: int = 0

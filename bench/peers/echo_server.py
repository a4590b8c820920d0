"""The floor: the least a Python child can do to answer JSON-RPC over stdio pipes.

Blocking reads and writes on fds 0 and 1, newline-delimited JSON decoded with msgspec,
every request answered `{"pong": true}` (initialize included). Whatever sidecar adds on
top of this (event loop, dispatch, validation, metrics) is the cost the bench reports.
"""

from __future__ import annotations

import os

import msgspec


class Request(msgspec.Struct):
    id: int | str | None = None


class Response(msgspec.Struct):
    id: int | str | None
    jsonrpc: str = "2.0"
    result: dict[str, bool] = msgspec.field(default_factory=lambda: {"pong": True})


def main() -> None:
    decode = msgspec.json.Decoder(Request).decode
    encoder = msgspec.json.Encoder()
    buf = bytearray()
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buf += chunk
        out = bytearray()
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:end])
            start = end + 1
            if not line.strip():
                continue
            request = decode(line)
            if request.id is not None:  # notifications get no answer
                encoder.encode_into(Response(request.id), out, len(out))
                out += b"\n"
        del buf[:start]
        view = memoryview(out)
        while view:  # one write per chunk read, like a server that batches its output
            view = view[os.write(1, view):]


if __name__ == "__main__":
    main()

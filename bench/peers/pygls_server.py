"""The LSP peer: a minimal pygls 2.x LanguageServer on stdio (Content-Length framing).

It answers a custom request `sidecar/ping` with `{"pong": true}` after `initialize`.
"""

from __future__ import annotations

from typing import Any

from pygls.lsp.server import LanguageServer

server = LanguageServer("bench-peer", "0")


@server.feature("sidecar/ping")
def ping(ls: LanguageServer, params: Any) -> dict[str, bool]:
    return {"pong": True}


if __name__ == "__main__":
    server.start_io()

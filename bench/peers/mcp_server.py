"""The MCP peer: the smallest stdio server the MCP Python SDK (2.x) makes.

The low-level `Server` answers MCP's own `ping` request after the `initialize` handshake;
`stdio_server()` is the SDK's stdio transport (anyio.wrap_file on stdin/stdout).
"""

from __future__ import annotations

import anyio
from mcp.server import Server
from mcp.server.stdio import stdio_server


async def main() -> None:
    server: Server = Server("bench-peer", version="0")
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)

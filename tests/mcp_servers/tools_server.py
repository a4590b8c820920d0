"""A real MCP server over stdio (the official `mcp` SDK) for chat's tests: a tool that works,
one that fails, one that kills the server mid-call, and a slow one."""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("sidecar-test-tools")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> str:
    return str(a + b)


@server.tool(description="Always fails with the given message.")
def fail(message: str = "it broke") -> str:
    raise ValueError(message)


@server.tool(description="Exits the server process in the middle of the call.")
def die() -> str:
    os._exit(3)


@server.tool(description="Sleeps, then answers.")
def slow(seconds: float = 5.0) -> str:
    time.sleep(seconds)
    return "done"


if __name__ == "__main__":
    server.run()

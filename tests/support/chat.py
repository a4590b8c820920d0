"""An in-process daemon with the chat capability, for the chat tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sidecar.app import CAPABILITIES
from sidecar.llm.capability import ChatCapability
from tests.harness import InProcessDaemon, in_process


@asynccontextmanager
async def daemon_with_chat(tmp_path: Path, *, fast_retries: bool = True) -> AsyncIterator[InProcessDaemon]:
    """The daemon on `tmp_path/d`, chat included whether or not the app lists it; retries
    5 ms apart (not the default's seconds) unless `fast_retries` is off."""
    extra = () if ChatCapability in CAPABILITIES else (ChatCapability,)
    async with in_process(tmp_path / "d", extra=extra) as daemon:
        if fast_retries:
            await daemon.call("settings/set", {"key": "llm.retryBaseMs", "value": 5})
        yield daemon

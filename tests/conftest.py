"""Shared fixtures: a real daemon subprocess per test, talking over stdio."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.client import DaemonClient

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.support.http_fixture"]


def serve_argv(data_dir: Path, *extra: str) -> list[str]:
    """The daemon command line tests use: this interpreter, a private data dir, the file key
    backend (no OS keyring on CI machines), and debug/* for failure modes on purpose."""
    return [sys.executable, "-m", "sidecar", "serve", "--data-dir", str(data_dir),
            "--secrets-backend", "file", "--debug-methods", *extra]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def spawn(data_dir: Path) -> Iterator[Callable[..., DaemonClient]]:
    """`spawn(*extra_args, initialize=True, **client_kwargs)` starts a daemon; all are
    closed (stdin EOF, then kill) at teardown."""
    clients: list[DaemonClient] = []

    def start(*extra: str, initialize: bool = True, **kwargs: object) -> DaemonClient:
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        client = DaemonClient(serve_argv(data_dir, *extra), **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        if initialize:
            client.initialize("pytest")
        return client

    yield start
    for client in clients:
        client.close(timeout=5)


@pytest.fixture
def daemon(spawn: Callable[..., DaemonClient]) -> DaemonClient:
    """An initialized daemon with debug methods, on a fresh data dir."""
    return spawn()

"""Daemon configuration from the command line, with platform defaults."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """$SIDECAR_DATA_DIR, else the platform's per-user data directory."""
    if env := os.environ.get("SIDECAR_DATA_DIR"):
        return Path(env)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "sidecar"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sidecar"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "sidecar"


@dataclass(slots=True)
class DaemonConfig:
    data_dir: Path
    parent_pid: int | None = None  # None: the real parent
    watch_parent: bool = True
    max_concurrency: int = 64
    max_message_bytes: int = 64 << 20
    log_level: str | None = None  # None: the log.level setting
    secrets_backend: str = "auto"  # auto | keyring | file
    debug_methods: bool = False
    migrations_dir: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sidecar.db"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "sidecar.log"

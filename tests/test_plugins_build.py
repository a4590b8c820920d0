"""CI rebuilds an example plugin from source and checks the bytes match the committed .wasm
(reproducible builds: tools/build_plugins.py). Runs wherever the dev extra is installed,
which brings the `ziglang` package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                                 reason="needs the ziglang package (pip install -e .[dev])"),
              pytest.mark.slow]


def test_an_example_rebuilds_to_the_committed_bytes() -> None:
    example = "text-tools"  # one is enough to catch an unreproducible build; each takes ~20-50 s
    done = subprocess.run([sys.executable, str(REPO / "tools/build_plugins.py"), "--check", example],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{example}: matches" in done.stdout
    # and the tree is left as it was: no zig cache beside the sources
    assert not list((REPO / "plugins" / example).glob("*zig-cache*"))


def test_the_check_fails_when_the_committed_bytes_differ(tmp_path: Path) -> None:
    """The check compares, it does not just build: a changed .wasm is reported."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "plugins", copy / "plugins", ignore=shutil.ignore_patterns("json-query", "fetch-cache"))
    (copy / "tools").mkdir()
    shutil.copy(REPO / "tools/build_plugins.py", copy / "tools/build_plugins.py")
    wasm = copy / "plugins/text-tools/text.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\0")
    done = subprocess.run([sys.executable, str(copy / "tools/build_plugins.py"), "--check", "text-tools"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "text-tools: DIFFERS" in done.stdout

"""Rebuild the example plugins' .wasm from their C sources with the ziglang PyPI package.

    python tools/build_plugins.py            # rebuild the example plugins in TARGETS
    python tools/build_plugins.py --check    # rebuild into a temp dir; exit 1 if any differs

Reproducible: fixed flags, no debug info (-s), the zig cache inside the build folder
(ZIG_GLOBAL_CACHE_DIR), so the same toolchain version gives the same bytes. Needs the dev
extra (`pip install -e .[dev]`, which brings `ziglang`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
#: plugin folder -> (C source, output)
TARGETS = {"text-tools": ("text.c", "text.wasm")}
FLAGS = ["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wl,-z,stack-size=131072"]


def build(name: str, out_dir: Path) -> Path:
    source, output = TARGETS[name]
    folder = PLUGINS / name
    target = out_dir / output
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(out_dir / ".zig-cache"),
               ZIG_LOCAL_CACHE_DIR=str(out_dir / ".zig-cache"))
    subprocess.run([sys.executable, "-m", "ziglang", "cc", *FLAGS, "-o", str(target), source],
                   cwd=folder, env=env, check=True)
    shutil.rmtree(out_dir / ".zig-cache", ignore_errors=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed .wasm")
    parser.add_argument("names", nargs="*", default=sorted(TARGETS))
    args = parser.parse_args()
    differs = 0
    for name in args.names:
        committed = PLUGINS / name / TARGETS[name][1]
        with tempfile.TemporaryDirectory() as tmp:
            built = build(name, Path(tmp))
            digest = hashlib.sha256(built.read_bytes()).hexdigest()
            if args.check:
                same = committed.exists() and committed.read_bytes() == built.read_bytes()
                print(f"{name}: {'matches' if same else 'DIFFERS from'} {committed.relative_to(ROOT)} ({digest})")
                differs += not same
            else:
                shutil.copyfile(built, committed)
                print(f"{name}: wrote {committed.relative_to(ROOT)} ({digest})")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())

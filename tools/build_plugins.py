"""Rebuild the example plugins' .wasm from their C and Zig sources with the ziglang PyPI package.

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
#: the ziglang release the committed .wasm were built with; another release may emit other bytes
ZIGLANG_VERSION = "0.17.1"
PLUGINS = ROOT / "plugins"
#: plugin folder -> (source, output); the source's suffix picks the compiler
TARGETS = {"text-tools": ("text.c", "text.wasm"), "json-query": ("main.zig", "query.wasm"),
           "fetch-cache": ("fetch.c", "fetch.wasm")}
C_FLAGS = ["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-s", "-Wl,-z,stack-size=131072"]
ZIG_FLAGS = ["-target", "wasm32-wasi", "-fno-entry", "-rdynamic", "-O", "ReleaseSmall", "-fstrip",
             "--stack", "131072"]


def command(source: str, target: Path) -> list[str]:
    if source.endswith(".zig"):
        return [sys.executable, "-m", "ziglang", "build-exe", *ZIG_FLAGS, f"-femit-bin={target}", source]
    return [sys.executable, "-m", "ziglang", "cc", *C_FLAGS, "-o", str(target), source]


def build(name: str, out_dir: Path) -> Path:
    source, output = TARGETS[name]
    folder = PLUGINS / name
    target = out_dir / output
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(out_dir / ".zig-cache"),
               ZIG_LOCAL_CACHE_DIR=str(out_dir / ".zig-cache"))
    subprocess.run(command(source, target), cwd=folder, env=env, check=True)
    shutil.rmtree(out_dir / ".zig-cache", ignore_errors=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed .wasm")
    parser.add_argument("names", nargs="*", default=sorted(TARGETS))
    args = parser.parse_args()
    import importlib.metadata

    installed = importlib.metadata.version("ziglang")
    if installed != ZIGLANG_VERSION:
        print(f"note: ziglang {installed} is installed; the committed .wasm were built with {ZIGLANG_VERSION}",
              file=sys.stderr)
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

"""`sidecar describe [METHOD] [--json]`: what a method takes and answers, from the protocol's
Structs (the same source as protocol/schema/openrpc.json); without METHOD, every method
with its summary. No daemon is started."""

from __future__ import annotations

import argparse
import sys

import msgspec


def run(args: argparse.Namespace) -> int:
    from protocol import catalog
    from protocol.describe import UnknownMethod, describe, render

    if args.method is None:
        if args.json:
            print(msgspec.json.format(msgspec.json.encode(
                [{"name": m.name, "summary": m.summary} for m in catalog.METHODS]).decode(), indent=2))
            return 0
        width = max(len(m.name) for m in catalog.METHODS)
        for m in catalog.METHODS:
            print(f"{m.name:<{width}}  {m.summary}")
        return 0
    try:
        description = describe(args.method)
    except UnknownMethod as exc:
        print(f"sidecar describe: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(description).decode(), indent=2))
    else:
        print(render(description))
    return 0

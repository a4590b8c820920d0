"""`sidecar doctor [--data-dir DIR] [--json]`: check the installation and the data directory.

Exit 0 when nothing is a problem (warnings allowed), 1 otherwise. It changes nothing.
"""

from __future__ import annotations

import argparse

import msgspec

from sidecar.config import default_data_dir


def run(args: argparse.Namespace) -> int:
    from sidecar.system.doctor import has_problem, render, run_checks

    data_dir = args.data_dir or default_data_dir()
    checks = run_checks(data_dir)
    if args.json:
        document = {"ok": not has_problem(checks), "dataDir": str(data_dir), "checks": checks}
        print(msgspec.json.format(msgspec.json.encode(document).decode(), indent=2))
    else:
        print(render(checks))
    return 1 if has_problem(checks) else 0

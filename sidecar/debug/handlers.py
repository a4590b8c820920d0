"""debug/*: failure modes on purpose, registered only with --debug-methods."""

from __future__ import annotations

import os
import subprocess
import time

import anyio
import anyio.lowlevel

from protocol import debug as p
from protocol.common import Empty
from sidecar.errors import InvalidValue, NotFound
from sidecar.server.context import RequestContext
from sidecar.server.lifeline import child_preexec
from sidecar.server.router import Router


def register(router: Router) -> None:
    @router.method(p.FAIL)
    def fail(ctx: RequestContext, params: Empty) -> None:
        raise RuntimeError("debug/fail was called; this text must stay in the log")

    @router.method(p.FAIL_ASYNC)
    async def fail_async(ctx: RequestContext, params: Empty) -> None:
        await anyio.lowlevel.checkpoint()  # fail after a suspension: in the task, not inline
        raise RuntimeError("debug/failAsync was called; this text must stay in the log")

    @router.method(p.SLEEP)
    async def sleep(ctx: RequestContext, params: p.SleepParams) -> p.SleepResult:
        began = time.monotonic()
        await anyio.sleep(params.seconds)
        return p.SleepResult(time.monotonic() - began)

    @router.method(p.PRINT)
    def print_(ctx: RequestContext, params: p.PrintParams) -> Empty:
        print(params.text, flush=True)
        os.write(1, params.text.encode() + b"\n")  # what C code writing to stdout does
        return Empty()

    # inline: the parent-death signal follows the thread that forked (see child_preexec)
    @router.method(p.SPAWN, inline=True)
    def spawn(ctx: RequestContext, params: p.SpawnParams) -> p.SpawnResult:
        # stdin is inherited on purpose: the daemon's fd 0 is /dev/null, which tests check
        try:
            child = subprocess.Popen(params.argv, stdout=subprocess.DEVNULL,
                                     preexec_fn=child_preexec if params.dieWithDaemon and os.name == "posix" else None)
        except ValueError as exc:  # a NUL byte in an argument: nothing was started
            raise InvalidValue(f"argv cannot be passed to a process: {exc}", "$.params.argv") from None
        except FileNotFoundError:
            raise NotFound(f"no program {params.argv[0][:200]!r}", program=params.argv[0][:200]) from None
        except OSError as exc:  # not executable, a folder, a name too long, ...
            raise InvalidValue(f"{params.argv[0][:200]!r} cannot be started: {exc.strerror}",
                               "$.params.argv[0]", errno=exc.errno) from None
        return p.SpawnResult(child.pid)

"""debug/*: offered only when the daemon runs with --debug-methods (tests, transcripts).

They make failure modes reachable on purpose: an unexpected exception, a long call to
cancel, a stray write to stdout from Python and from C, a child process.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from protocol.common import Empty
from protocol.spec import MethodSpec


class SleepParams(msgspec.Struct):
    seconds: Annotated[float, Meta(ge=0, le=3600)]


class SleepResult(msgspec.Struct):
    slept: float


class PrintParams(msgspec.Struct):
    text: str


class SpawnParams(msgspec.Struct):
    argv: Annotated[list[str], Meta(min_length=1)]
    #: also have the kernel kill it if the daemon is killed -9 (Linux); off, the daemon's
    #: own clean-up on exit is what takes it down
    dieWithDaemon: bool = False


class SpawnResult(msgspec.Struct):
    pid: int


FAIL = MethodSpec("debug/fail", Empty, None, "Raise an unexpected exception (answers -32603).")
FAIL_ASYNC = MethodSpec("debug/failAsync", Empty, None,
                        "Raise an unexpected exception in a request's own task (answers -32603).")
SLEEP = MethodSpec("debug/sleep", SleepParams, SleepResult, "Sleep, cancellably.")
PRINT = MethodSpec("debug/print", PrintParams, Empty,
                   "Write text to stdout with print() and to fd 1 directly; neither may reach the protocol.")
SPAWN = MethodSpec("debug/spawn", SpawnParams, SpawnResult,
                   "Start a child process that the daemon must take down when it exits.")

METHODS = (FAIL, FAIL_ASYNC, SLEEP, PRINT, SPAWN)
NOTIFICATIONS = ()

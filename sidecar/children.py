"""Child processes the daemon starts (MCP servers, process plugins, model runners, DevShell
commands): spawned with pipes, limited, tracked, and always ended.

    async with children.open([exe, "--stdio"], rlimits=RLimits(cpu_seconds=30)) as child:
        await child.send_line(b'{"jsonrpc":"2.0",...}')
        async for line in child.lines(max_line=1 << 20):
            ...

- **Dies with us.** On Linux each child gets PR_SET_PDEATHSIG=SIGKILL (`child_preexec`), so
  even a `kill -9` of the daemon takes it along. The kernel fires it when the *thread* that
  forked the child exits, so children are spawned from the event loop's thread (here: always,
  `open` is a coroutine run by the loop), never from a worker thread.
- **Limits** (`RLimits`: address space, CPU seconds, open files) are set in the child between
  fork and exec, so they hold from its first instruction.
- **Environment**: inherited, or scrubbed to a short list of harmless variables
  (`scrub_env=True`), plus `env` on top (a None value removes a variable).
- **Always ended**: leaving the `async with` (normally, by an exception, or by cancellation)
  closes stdin, sends SIGTERM, waits `grace` seconds (shielded from cancellation), then
  SIGKILLs and reaps it. `ChildProcesses.terminate_all()` does the same to every child still
  running (daemon shutdown); `lifeline.terminate_descendants` remains the last resort for
  grandchildren.
- **stderr** is drained all the time (a child blocked on a full stderr pipe would hang) into
  a ring buffer of its last lines (`child.stderr_tail()`, for a crash report) and the log.

anyio's `open_process` offers no `preexec_fn` (by design, agronholm/anyio#625, #742), so on
the asyncio backend (the daemon's) children are started with asyncio's `subprocess_exec`,
which passes it to `subprocess.Popen`; on any other backend `anyio.open_process` is used, and
the parent-death signal and rlimits are unavailable (asking for rlimits raises).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc

from sidecar.errors import ResourceExhausted, Unavailable
from sidecar.server.lifeline import child_preexec

if os.name == "posix":
    import resource
else:  # pragma: no cover
    resource = None  # type: ignore[assignment]

log = logging.getLogger("sidecar.children")

#: variables a scrubbed environment keeps (when the daemon has them)
SAFE_ENV: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "TEMP", "TMP", "SYSTEMROOT", "SYSTEMDRIVE", "COMSPEC", "PATHEXT", "WINDIR",
)
DEFAULT_GRACE = 2.0
DEFAULT_STDERR_LINES = 200
DEFAULT_MAX_LINE = 1 << 20
_READ_SIZE = 65536


class LineTooLong(ResourceExhausted):
    """A child wrote a line longer than the reader allows."""


@dataclass(frozen=True, slots=True)
class RLimits:
    """Limits applied in the child (POSIX). None leaves a limit as inherited."""

    #: bytes of virtual memory (RLIMIT_AS); allocations beyond fail (MemoryError in Python)
    address_space: int | None = None
    #: seconds of CPU time (RLIMIT_CPU): SIGXCPU at the limit, SIGKILL a second later
    cpu_seconds: int | None = None
    #: open file descriptors (RLIMIT_NOFILE)
    open_files: int | None = None

    def pairs(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) to set; computed in the parent, nothing to look up after fork."""
        if resource is None:
            raise Unavailable("resource limits for child processes need a POSIX system")
        out = []
        for which, value, extra in ((resource.RLIMIT_AS, self.address_space, 0),
                                    (resource.RLIMIT_CPU, self.cpu_seconds, 1),
                                    (resource.RLIMIT_NOFILE, self.open_files, 0)):
            if value is None:
                continue
            _, hard = resource.getrlimit(which)
            soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
            new_hard = soft + extra if hard == resource.RLIM_INFINITY else min(soft + extra, hard)
            out.append((which, soft, new_hard))
        return out


def _preexec(limits: list[tuple[int, int, int]]) -> Callable[[], None]:
    def run() -> None:  # between fork and exec: no imports, no locks, no logging
        child_preexec()
        for which, soft, hard in limits:
            resource.setrlimit(which, (soft, hard))

    return run


def child_env(env: Mapping[str, str | None] | None = None, *, scrub: bool = False,
              keep: Iterable[str] = SAFE_ENV) -> dict[str, str]:
    """The environment for a child: ours (or, scrubbed, only `keep`), with `env` applied."""
    if scrub:
        base = {name: os.environ[name] for name in keep if name in os.environ}
    else:
        base = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


@dataclass(frozen=True, slots=True)
class ChildInfo:
    pid: int
    argv: tuple[str, ...]
    name: str
    #: wall-clock start, seconds since the epoch
    started: float


class _Pipes(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...
    async def write(self, data: bytes) -> None: ...
    async def close_stdin(self) -> None: ...
    async def read_stdout(self) -> bytes: ...
    async def read_stderr(self) -> bytes: ...
    async def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


class _AsyncioPipes:
    """asyncio's subprocess, read and written in anyio style (b"" at end of stream)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._p = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._p.returncode

    async def write(self, data: bytes) -> None:
        assert self._p.stdin is not None
        self._p.stdin.write(data)
        await self._p.stdin.drain()

    async def close_stdin(self) -> None:
        stdin = self._p.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
            try:
                await stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def read_stdout(self) -> bytes:
        assert self._p.stdout is not None
        return await self._p.stdout.read(_READ_SIZE)

    async def read_stderr(self) -> bytes:
        assert self._p.stderr is not None
        return await self._p.stderr.read(_READ_SIZE)

    async def wait(self) -> int:
        return await self._p.wait()

    def send_signal(self, sig: int) -> None:
        if self._p.returncode is None:
            try:
                self._p.send_signal(signal.Signals(sig))
            except ProcessLookupError:
                pass


class _AnyioPipes:
    """anyio.open_process (any backend; no preexec_fn)."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self._p = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._p.returncode

    async def write(self, data: bytes) -> None:
        assert self._p.stdin is not None
        await self._p.stdin.send(data)

    async def close_stdin(self) -> None:
        if self._p.stdin is not None:
            try:
                await self._p.stdin.aclose()
            except (anyio.BrokenResourceError, OSError):
                pass

    async def _read(self, stream: anyio.abc.ByteReceiveStream | None) -> bytes:
        assert stream is not None
        try:
            return await stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return b""

    async def read_stdout(self) -> bytes:
        return await self._read(self._p.stdout)

    async def read_stderr(self) -> bytes:
        return await self._read(self._p.stderr)

    async def wait(self) -> int:
        return await self._p.wait()

    def send_signal(self, sig: int) -> None:
        if self._p.returncode is None:
            try:
                self._p.send_signal(signal.Signals(sig))
            except ProcessLookupError:
                pass


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _spawn(argv: Sequence[str], cwd: str | os.PathLike[str] | None, env: Mapping[str, str],
                 limits: list[tuple[int, int, int]]) -> _Pipes:
    posix = os.name == "posix"
    if _on_asyncio():
        # in the loop's thread: the parent-death signal is tied to this thread (see lifeline)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=dict(env),
            preexec_fn=_preexec(limits) if posix else None, limit=_READ_SIZE)
        return _AsyncioPipes(process)
    if limits:
        raise Unavailable("resource limits for child processes need the asyncio backend")
    return _AnyioPipes(await anyio.open_process(list(argv), cwd=cwd, env=env))


class Child:
    """One running child: its pipes, a line reader over stdout, and the tail of its stderr."""

    def __init__(self, pipes: _Pipes, argv: Sequence[str], name: str, stderr_lines: int) -> None:
        self._pipes = pipes
        self.pid = pipes.pid
        self.argv = tuple(argv)
        self.name = name
        self.started = time.time()
        self._tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._buffer = bytearray()
        self._stdout_ended = False
        self._stdin_lock = anyio.Lock()
        self._stderr_done = anyio.Event()

    @property
    def info(self) -> ChildInfo:
        return ChildInfo(self.pid, self.argv, self.name, self.started)

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped; negative: killed by that signal (POSIX)."""
        return self._pipes.returncode

    # ---- stdin ---------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write bytes to the child's stdin (waits while the pipe is full).
        BrokenPipeError if the child closed its stdin or exited."""
        async with self._stdin_lock:
            try:
                await self._pipes.write(data)
            except (ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise BrokenPipeError(f"{self.name} (pid {self.pid}) is not reading its input") from exc

    async def send_line(self, line: bytes) -> None:
        """Write one line; the newline is added (a line must not contain one)."""
        if b"\n" in line:
            raise ValueError("a line to send must not contain a newline")
        await self.send(line + b"\n")

    async def close_stdin(self) -> None:
        async with self._stdin_lock:
            await self._pipes.close_stdin()

    # ---- stdout --------------------------------------------------------------

    async def read(self) -> bytes:
        """The next bytes from stdout (whatever is buffered first); b"" at the end."""
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        if self._stdout_ended:
            return b""
        data = await self._pipes.read_stdout()
        if not data:
            self._stdout_ended = True
        return data

    async def read_line(self, max_line: int = DEFAULT_MAX_LINE) -> bytes | None:
        """The next stdout line without its newline; None at the end of the output (a last line
        without a newline is returned first). LineTooLong past `max_line` bytes."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                if end > max_line:
                    raise LineTooLong(f"{self.name} wrote a line longer than {max_line} bytes", limit=max_line)
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > max_line:
                raise LineTooLong(f"{self.name} wrote a line longer than {max_line} bytes", limit=max_line)
            start = len(self._buffer)
            if self._stdout_ended:
                if self._buffer:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line
                return None
            data = await self._pipes.read_stdout()
            if data:
                self._buffer += data
            else:
                self._stdout_ended = True

    async def lines(self, max_line: int = DEFAULT_MAX_LINE) -> AsyncIterator[bytes]:
        """stdout, line by line (without newlines), until the child closes it."""
        while (line := await self.read_line(max_line)) is not None:
            yield line

    # ---- stderr --------------------------------------------------------------

    def stderr_tail(self) -> list[str]:
        """The child's last stderr lines (bounded), oldest first."""
        return list(self._tail)

    async def _drain_stderr(self, level: int) -> None:
        pending = bytearray()
        max_kept = 4096  # a line longer than this is kept cut short

        def keep(raw: bytes) -> None:
            text = raw[:max_kept].rstrip(b"\r").decode("utf-8", "replace")
            self._tail.append(text)
            if log.isEnabledFor(level):
                log.log(level, "%s [%d] stderr: %s", self.name, self.pid, text)

        try:
            while data := await self._pipes.read_stderr():
                pending += data
                while (end := pending.find(b"\n")) >= 0:
                    keep(bytes(pending[:end]))
                    del pending[:end + 1]
                if len(pending) > max_kept:
                    keep(bytes(pending))
                    pending.clear()
            if pending:
                keep(bytes(pending))
        finally:
            self._stderr_done.set()

    # ---- ending --------------------------------------------------------------

    async def wait(self) -> int:
        """Wait for the child to exit; its return code."""
        return await self._pipes.wait()

    def send_signal(self, sig: int) -> None:
        self._pipes.send_signal(sig)

    async def terminate(self, grace: float = DEFAULT_GRACE) -> int:
        """Close stdin, SIGTERM, wait up to `grace` s, then SIGKILL; reaped on return.
        Shielded: a cancelled caller still gets the child ended."""
        with anyio.CancelScope(shield=True):
            try:
                await self.close_stdin()
            except OSError:
                pass
            if self.returncode is None:
                self.send_signal(signal.SIGTERM)
                with anyio.move_on_after(grace):
                    await self.wait()
                if self.returncode is None:
                    log.info("%s (pid %d) outlived SIGTERM by %.1f s; killing it", self.name, self.pid, grace)
                    self.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            code = await self.wait()
        return code


class ChildProcesses:
    """Every child the daemon runs: listed, and all ended on shutdown."""

    def __init__(self, *, grace: float = DEFAULT_GRACE, stderr_lines: int = DEFAULT_STDERR_LINES) -> None:
        self.grace = grace
        self.stderr_lines = stderr_lines
        self._live: dict[int, Child] = {}
        self._closed = False

    def list(self) -> list[ChildInfo]:
        """Children running now, oldest first."""
        return [child.info for child in sorted(self._live.values(), key=lambda c: c.started)]

    def __len__(self) -> int:
        return len(self._live)

    @asynccontextmanager
    async def open(self, argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                   env: Mapping[str, str | None] | None = None, scrub_env: bool = False,
                   keep_env: Iterable[str] = SAFE_ENV, rlimits: RLimits | None = None,
                   grace: float | None = None, name: str | None = None,
                   stderr_log_level: int = logging.DEBUG) -> AsyncIterator[Child]:
        """Start `argv` with piped stdin/stdout/stderr; ended when the block is left (see
        the module docstring). `name` labels it in logs and listings (default: argv[0])."""
        if self._closed:
            raise Unavailable("the daemon is shutting down; no new child processes")
        if not argv:
            raise ValueError("argv must name a program")
        limits = rlimits.pairs() if rlimits is not None else []
        environment = child_env(env, scrub=scrub_env, keep=keep_env)
        label = name or os.path.basename(str(argv[0]))
        pipes = await _spawn([str(a) for a in argv], cwd, environment, limits)
        child = Child(pipes, argv, label, self.stderr_lines)
        self._live[child.pid] = child
        log.debug("started %s (pid %d): %s", label, child.pid, " ".join(child.argv))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(child._drain_stderr, stderr_log_level, name=f"stderr of {label}")
                try:
                    yield child
                finally:
                    code = await child.terminate(self.grace if grace is None else grace)
                    log.debug("%s (pid %d) ended with %s", label, child.pid, code)
                    # the stderr reader ends at EOF, keeping the last lines; a grandchild that
                    # holds the pipe open must not hold us
                    with anyio.CancelScope(shield=True):
                        with anyio.move_on_after(0.5):
                            await child._stderr_done.wait()
                    tg.cancel_scope.cancel()
        finally:
            self._live.pop(child.pid, None)

    async def terminate_all(self, grace: float | None = None) -> int:
        """End every child still running (concurrently) and refuse new ones; how many."""
        self._closed = True
        running = list(self._live.values())
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for child in running:
                    tg.start_soon(child.terminate, self.grace if grace is None else grace)
        if running:
            log.info("terminated %d child process(es)", len(running))
        return len(running)


#: the daemon's registry (the composition root may also build its own and pass it around)
CHILDREN = ChildProcesses()


def open(argv: Sequence[str], **kwargs: Any) -> Any:  # noqa: A001 - children.open reads well
    """`CHILDREN.open(...)`: `async with children.open(argv, ...) as child:`."""
    return CHILDREN.open(argv, **kwargs)


__all__ = ["CHILDREN", "Child", "ChildInfo", "ChildProcesses", "LineTooLong", "RLimits", "SAFE_ENV",
           "child_env", "open"]

"""Process plugins (`runtime = "process"`): a child process speaking line-delimited JSON-RPC.

The host writes one request per line to the child's stdin,

    {"jsonrpc": "2.0", "id": 7, "method": "call", "params": {"tool": "...", "input": {...}}}

and the child answers one line on stdout, `{"jsonrpc": "2.0", "id": 7, "result": <output>}` or
`{..., "error": {"message": "..."}}`. A cancelled call is followed by the notification
`{"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}}`. Lines that are not
JSON-RPC answers go to the plugin's log (as `stdout`).

The child is started on the first call with the platform's child-process helper
(`sidecar.children`): resource limits from setrlimit (address space, CPU seconds, open
files), its working directory in the plugin's data dir, a scrubbed environment (plus the
declared-and-granted `env` names, `SIDECAR_PLUGIN_ID` and `SIDECAR_PLUGIN_DATA`), and it dies
with the daemon. It is kept between calls; a call that passes its wall-clock timeout kills it
(the next call starts a new one), and so does running out of CPU seconds or memory.
Process plugins run outside the sandbox: they are `trusted` and need a grant saying so.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

from sidecar import children
from sidecar.children import RLimits
from sidecar.errors import PluginTrap, ResourceExhausted, Unavailable

log = logging.getLogger("sidecar.plugins")

#: CPU seconds a plugin process may use over its life (it is restarted after SIGXCPU)
CPU_SECONDS = 300
OPEN_FILES = 256
MAX_LINE = 16 << 20
START_GRACE = 1.0


class _Pending:
    __slots__ = ("answer", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.answer: dict[str, Any] | None = None


class ProcessPlugin:
    """One process plugin's child: started on demand, shared by its calls, restarted after it dies."""

    def __init__(self, plugin_id: str, argv: list[str], folder: Path, data_dir: Path,
                 log_line: Callable[[str, str, str], None]) -> None:
        self.plugin_id = plugin_id
        self.argv = argv
        self.folder = folder
        self.data_dir = data_dir
        self.log_line = log_line
        self.pid: int | None = None
        self._child: children.Child | None = None
        self._stop: anyio.Event | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._start_lock = anyio.Lock()
        self._exit: str | None = None

    def command(self) -> list[str]:
        """argv with the program found on PATH and files of the plugin's folder made absolute
        (the child runs in its data dir)."""
        argv = []
        for i, arg in enumerate(self.argv):
            inside = self.folder / arg
            if not Path(arg).is_absolute() and inside.is_file():
                argv.append(str(inside))
            elif i == 0:
                argv.append(shutil.which(arg) or arg)
            else:
                argv.append(arg)
        return argv

    async def call(self, tg: anyio.abc.TaskGroup, tool: str, arguments: Any, *, timeout_ms: int,
                   memory_bytes: int, env: dict[str, str]) -> Any:
        child = await self._ensure(tg, memory_bytes, env)
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        line = msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "method": "call",
                                    "params": {"tool": tool, "input": arguments}})
        try:
            try:
                await child.send_line(line)
            except BrokenPipeError:
                raise PluginTrap(f"the plugin process is not reading its input{self._exit_note()}",
                                 reason="process_exited") from None
            with anyio.move_on_after(timeout_ms / 1000) as scope:
                await pending.event.wait()
            if scope.cancelled_caught:
                log.warning("plugin %s passed its %d ms timeout; killing its process", self.plugin_id, timeout_ms)
                await self.stop()
                raise ResourceExhausted(f"the plugin ran past its {timeout_ms} ms deadline", limit="timeoutMs",
                                        max=timeout_ms, used=timeout_ms)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                try:
                    await child.send_line(msgspec.json.encode({"jsonrpc": "2.0", "method": "$/cancelRequest",
                                                               "params": {"id": request_id}}))
                except (BrokenPipeError, OSError):
                    pass
            raise
        finally:
            self._pending.pop(request_id, None)
        answer = pending.answer
        if answer is None:
            raise PluginTrap(f"the plugin process exited during the call{self._exit_note()}", reason="process_exited")
        if "error" in answer:
            error = answer["error"]
            message = str(error.get("message", error) if isinstance(error, dict) else error)[:500]
            raise PluginTrap(f"the plugin answered an error: {message}", reason="process_error", trap=message)
        return answer.get("result")

    async def _ensure(self, tg: anyio.abc.TaskGroup, memory_bytes: int, env: dict[str, str]) -> children.Child:
        async with self._start_lock:
            if self._child is not None:
                return self._child
            self.data_dir.mkdir(parents=True, exist_ok=True)
            started: anyio.Event = anyio.Event()
            failure: list[BaseException] = []
            self._stop = anyio.Event()
            self._exit = None
            tg.start_soon(self._run, memory_bytes, env, started, failure, name=f"plugin process {self.plugin_id}")
            await started.wait()
            if failure or self._child is None:
                raise Unavailable(f"cannot start plugin {self.plugin_id}: "
                                  f"{failure[0] if failure else 'it exited at once'}", id=self.plugin_id)
            return self._child

    async def _run(self, memory_bytes: int, env: dict[str, str], started: anyio.Event,
                   failure: list[BaseException]) -> None:
        """Own the child for its life (a task of the service's task group): start it, route
        its answers, and end it when asked, when it exits, or when the daemon stops."""
        argv = self.command()
        stop = self._stop
        assert stop is not None
        code: int | None = None
        tail: list[str] = []
        try:
            async with children.open(argv, cwd=self.data_dir, scrub_env=True, env=env,
                                     rlimits=RLimits(address_space=memory_bytes, cpu_seconds=CPU_SECONDS,
                                                     open_files=OPEN_FILES),
                                     name=f"plugin:{self.plugin_id}", stderr_log_level=logging.INFO,
                                     grace=START_GRACE) as child:
                self._child, self.pid = child, child.pid
                started.set()
                try:
                    async with anyio.create_task_group() as inner:
                        async def stopper() -> None:
                            await stop.wait()
                            inner.cancel_scope.cancel()
                        inner.start_soon(stopper)
                        await self._read(child)
                        inner.cancel_scope.cancel()
                except Exception as exc:  # noqa: BLE001 - a bad child must not take the service down
                    log.warning("plugin %s process: %s; ending it", self.plugin_id, exc)
            code = child.returncode
            tail = child.stderr_tail()[-3:]
        except (OSError, Unavailable, ValueError) as exc:
            failure.append(exc)
        finally:
            started.set()
            self._child = None
            self.pid = None
            for pending in list(self._pending.values()):
                pending.event.set()  # answer None: the process is gone
        self._exit = f"exit status {code}" + (f"; stderr: {' | '.join(tail)}" if tail else "")
        log.info("plugin %s process ended (%s)", self.plugin_id, self._exit)

    async def _read(self, child: children.Child) -> None:
        async for raw in child.lines(max_line=MAX_LINE):
            try:
                message = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                message = None
            if isinstance(message, dict) and isinstance(message.get("id"), int) and \
                    ("result" in message or "error" in message):
                pending = self._pending.get(message["id"])
                if pending is not None:
                    pending.answer = message
                    pending.event.set()
                continue
            self.log_line("info", "stdout", raw.decode("utf-8", "replace"))

    def _exit_note(self) -> str:
        return f" ({self._exit})" if self._exit else ""

    async def stop(self) -> None:
        """End the child (if running) and wait until it is gone."""
        if self._stop is not None:
            self._stop.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(START_GRACE + 3):
            while self._child is not None:
                await anyio.sleep(0.01)

    def usage(self) -> tuple[int, float] | None:
        """(RSS bytes, CPU seconds) of the running child, from psutil; None when not running."""
        if self.pid is None:
            return None
        import psutil

        try:
            proc = psutil.Process(self.pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                return proc.memory_info().rss, round(cpu.user + cpu.system, 3)
        except psutil.Error:
            return None


def child_env(plugin_id: str, data_dir: Path, names: list[str]) -> dict[str, str]:
    """What a process plugin gets on top of the scrubbed environment."""
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.update(SIDECAR_PLUGIN_ID=plugin_id, SIDECAR_PLUGIN_DATA=str(data_dir))
    return env

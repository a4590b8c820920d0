"""Long-lived worker threads fed by a queue: a cheaper hand-off than anyio's thread pool.

`anyio.to_thread.run_sync` costs an extra loop iteration, a capacity limiter, a cancel scope
and a locked queue per call: 60-120 µs a round trip on a 2-CPU VM, against 26-35 µs for a
job put on a `SimpleQueue` that a waiting thread takes, its outcome posted back with
`loop.call_soon_threadsafe` (bench/projects_bench.py, bench/plugins_bench.py). The store's
writer (one thread: writes in order) and plugin calls (several: a slow plugin must not hold
up the others) use it.

Threads start on demand, up to `max_threads`, and wait with a plain blocking `get()`: a
`get(timeout=...)` (to retire idle threads) doubled the hand-off's cost (26 -> 58 µs).
They end on `stop()`/`close()`, after the jobs handed in before it. Asyncio only: a caller
on another anyio backend uses anyio's pool instead (`running_loop()` returns None there).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")

_Job: TypeAlias = tuple[contextvars.Context, Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None under another event loop (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the event loop: hand a job's outcome to the task awaiting it."""
    if future.cancelled():  # its caller stopped waiting (a cancelled, unshielded await)
        return
    if error is None:
        future.set_result(result)
    elif isinstance(error, StopIteration):  # a Future refuses StopIteration, as anyio's pool does
        wrapped = RuntimeError("the job raised StopIteration")
        wrapped.__cause__ = error
        future.set_exception(wrapped)
    else:
        future.set_exception(error)


class WorkerThreads:
    """Up to `max_threads` threads named `name` running the jobs handed in. With one thread
    jobs run one at a time in the order handed in."""

    def __init__(self, name: str, max_threads: int = 1, closed_message: str = "the workers are stopped") -> None:
        self._name = name
        self._max = max_threads
        self._closed_message = closed_message
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # thread starts and the idle count against stop()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, call: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        """Run `call()` on a thread (in a copy of the caller's context, as anyio's pool does)
        and settle `future` on `loop` with its outcome. RuntimeError once stopped."""
        job = (contextvars.copy_context(), call, loop, future)
        with self._lock:
            if self._closed:
                raise RuntimeError(self._closed_message)
            if self._idle == 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._threads.append(thread)
                self._idle += 1  # counted now: the next submit must not start another for this job
                thread.start()
            self._idle -= 1
            self._jobs.put(job)

    async def run(self, call: Callable[[], T], loop: asyncio.AbstractEventLoop) -> T:
        """`call()` on a thread; its outcome. Cancelling the await stops waiting, not the call."""
        future: asyncio.Future[T] = loop.create_future()
        self.submit(call, loop, future)
        return await future

    def stop(self) -> list[threading.Thread]:
        """No more hand-ins; the threads end after the jobs already handed in. Returns them."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._jobs.put(None)
        return threads

    def close(self) -> None:
        """`stop()`, and wait for the jobs already handed in."""
        for thread in self.stop():
            if thread is not threading.current_thread():
                thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            context, call, loop, future = job
            del job
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(call)
            except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the caller
                error = exc
            with self._lock:
                self._idle += 1
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del context, call, loop, future, result, error

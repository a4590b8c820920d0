"""Logging to stderr and a rotating file in the data directory; never to stdout; never blocking.

A shell that pipes our stderr and never reads it fills the pipe (64 KiB on Linux), after which
every write to fd 2 blocks. Logging therefore never writes from the caller's thread: one
`QueueHandler` on the root logger formats a record once (tracebacks included, while the frames
are still there) and puts it, without waiting, into one bounded queue per destination:

- **file**: a thread writes every record to the rotating log file. Writing a file is fast,
  so this queue only fills if the disk stalls; then records are dropped and counted.
- **stderr**: a thread writes straight to fd 2 with `os.write`. When nobody reads the pipe
  that thread blocks, its queue fills, and further records are dropped (and counted) rather
  than waited for. Once the pipe drains, a line says how many were left out. EPIPE/EBADF
  end stderr logging quietly (counted as drops), never an exception or a busy loop.

`dropped()` reports the counts per destination; `shutdown()` flushes the file and does not
wait on a stderr that cannot take more.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Final

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_BYTES = 5 << 20
BACKUP_COUNT = 3
#: records waiting for the file thread (only a stalled disk fills this)
FILE_QUEUE = 20_000
#: records waiting for the stderr thread: what a blocked pipe may hold back before drops start
STDERR_QUEUE = 1_000
#: records a destination thread takes from its queue at once (stderr: joined into one write)
BATCH = 256
#: how long `shutdown` lets a healthy stderr drain its queue
STDERR_DRAIN_SECONDS = 0.5
FILE_DRAIN_SECONDS = 5.0

_STOP: Final = object()


class _Destination:
    """A bounded queue and the thread that empties it."""

    name: str

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.queue: queue.Queue[object] = queue.Queue(maxsize)
        self.dropped = 0
        self.closed = False  # no more records will be taken (stopped, or the destination failed)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sidecar-log-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, record: logging.LogRecord) -> None:
        """Queue the record, or count it dropped; never waits."""
        if not self.closed:
            try:
                self.queue.put_nowait(record)
                return
            except queue.Full:
                pass
        with self._lock:
            self.dropped += 1

    def count_dropped(self, n: int) -> None:
        with self._lock:
            self.dropped += n

    def stop(self, timeout: float) -> None:
        """Ask the thread to finish what is queued and wait up to `timeout` for it."""
        self.closed = True
        deadline = time.monotonic() + timeout
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _next_batch(self, limit: int) -> tuple[list[logging.LogRecord], bool]:
        """Wait for one record, then take whatever else is already there (up to `limit`);
        the flag says a stop was asked for."""
        item = self.queue.get()
        if item is _STOP:
            return [], True
        batch = [item]
        while len(batch) < limit:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True  # type: ignore[return-value]
            batch.append(item)
        return batch, False  # type: ignore[return-value]

    def _run(self) -> None:
        raise NotImplementedError


class _FileDestination(_Destination):
    def __init__(self, handler: logging.Handler, maxsize: int) -> None:
        super().__init__("file", maxsize)
        self.handler = handler

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch(BATCH)
            for record in batch:
                self.write(record)
            if stop:
                self.handler.flush()
                return

    def write(self, record: logging.LogRecord) -> None:
        """Write one record (a full disk counts it dropped and logging goes on)."""
        handler = self.handler
        handler.acquire()  # re-entrant: handle() takes it again
        try:
            handler.failed = False  # type: ignore[attr-defined]
            handler.handle(record)
            failed = handler.failed  # type: ignore[attr-defined]
        finally:
            handler.release()
        if failed:
            self.count_dropped(1)


class _RotatingFile(logging.handlers.RotatingFileHandler):
    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        # the default prints a traceback to sys.stderr, which may be the pipe nobody reads
        self.failed = True


class _StderrDestination(_Destination):
    def __init__(self, fd: int, formatter: logging.Formatter, maxsize: int) -> None:
        super().__init__("stderr", maxsize)
        self.fd = fd
        self.formatter = formatter
        self.writing_since: float | None = None  # set while the thread is inside a write
        self._reported = 0  # drops already announced on stderr

    def blocked(self, for_seconds: float = 0.1) -> bool:
        since = self.writing_since
        return since is not None and time.monotonic() - since > for_seconds

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch(BATCH)
            if batch:
                lines = []
                dropped = self.dropped
                if dropped > self._reported:
                    note = logging.makeLogRecord({
                        "name": "sidecar.logs", "levelno": logging.WARNING, "levelname": "WARNING",
                        "msg": f"{dropped - self._reported} log record(s) were left out of stderr "
                               f"(it was not being read); the log file has them"})
                    lines.append(self.formatter.format(note) + "\n")
                    self._reported = dropped
                for record in batch:
                    try:
                        lines.append(self.formatter.format(record) + "\n")
                    except Exception:  # noqa: BLE001 - the caller's prepare already formatted it
                        lines.append(f"{record.getMessage()!s}\n")
                if not self._write("".join(lines).encode("utf-8", "backslashreplace")):
                    self.closed = True
                    self.count_dropped(len(batch) + self._discard())
                    return
            if stop:
                return

    def _write(self, data: bytes) -> bool:
        """Write it all; False if stderr is gone (EPIPE, EBADF, ...)."""
        view = memoryview(data)
        self.writing_since = time.monotonic()
        try:
            while view:
                try:
                    written = os.write(self.fd, view)
                except BlockingIOError:
                    # someone made the fd non-blocking: wait until it can take more, without spinning
                    _wait_writable(self.fd)
                    continue
                view = view[written:]
        except OSError:
            # EPIPE (reader gone), EBADF (fd closed), EIO...: stderr cannot take our records;
            # give up on it quietly, once
            return False
        finally:
            self.writing_since = None
        return True

    def _discard(self) -> int:
        n = 0
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return n
            if item is not _STOP:
                n += 1


def _wait_writable(fd: int) -> None:
    if os.name == "posix":
        import select

        select.select([], [fd], [], 1.0)
    else:  # pragma: no cover - Windows pipes are not made non-blocking by os.set_blocking
        time.sleep(0.05)


class NonBlockingHandler(logging.handlers.QueueHandler):
    """The one handler on the root logger: formats once, queues per destination, never waits."""

    def __init__(self, *, log_file: Path | None = None, stderr_fd: int | None = None,
                 file_queue: int = FILE_QUEUE, stderr_queue: int = STDERR_QUEUE) -> None:
        # `self.queue` (QueueHandler's) is the file's queue; stderr has its own
        self.formatter_for_output = logging.Formatter(FORMAT)
        self.destinations: list[_Destination] = []
        self.file: _FileDestination | None = None
        self.stderr: _StderrDestination | None = None
        self.file_error: OSError | None = None
        if log_file is not None:
            try:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                file_handler = _RotatingFile(log_file, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT,
                                             encoding="utf-8")
            except OSError as exc:
                self.file_error = exc
            else:
                file_handler.setFormatter(self.formatter_for_output)
                self.file = _FileDestination(file_handler, file_queue)
                self.destinations.append(self.file)
        if stderr_fd is not None:
            self.stderr = _StderrDestination(stderr_fd, self.formatter_for_output, stderr_queue)
            self.destinations.append(self.stderr)
        super().__init__(self.file.queue if self.file is not None else queue.Queue(1))
        self._stopped = False
        self._stop_lock = threading.Lock()
        for destination in self.destinations:
            destination.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prepared = self.prepare(record)
        except Exception:  # noqa: BLE001 - a bad format string must not break the caller
            prepared = logging.makeLogRecord({
                "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                "created": record.created, "msecs": record.msecs, "process": record.process,
                "msg": f"(unformattable log record: {record.msg!r} % {record.args!r})"})
        if self._stopped:
            self._emit_after_shutdown(prepared)
            return
        for destination in self.destinations:
            destination.offer(prepared)

    def _emit_after_shutdown(self, record: logging.LogRecord) -> None:
        """Late records (after `shutdown`): straight to the file, which cannot block us for long."""
        if self.file is not None:
            self.file.write(record)
        if self.stderr is not None:
            self.stderr.count_dropped(1)

    def handleError(self, record: logging.LogRecord) -> None:
        # never the default (a traceback written to sys.stderr, possibly the full pipe)
        pass

    @property
    def rotating(self) -> logging.handlers.RotatingFileHandler | None:
        """The file handler its thread writes through (None without a log file)."""
        return self.file.handler if self.file is not None else None  # type: ignore[return-value]

    def dropped(self) -> dict[str, int]:
        return {d.name: d.dropped for d in self.destinations}

    def shutdown(self) -> None:
        """Write out what the file queue holds; give stderr a moment unless it is blocked."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self.stderr is not None:
            if self.stderr.blocked() or self.stderr.closed:
                self.stderr.closed = True
            else:
                self.stderr.stop(STDERR_DRAIN_SECONDS)
        if self.file is not None:
            self.file.stop(FILE_DRAIN_SECONDS)
            self.file.handler.flush()

    def close(self) -> None:
        # logging.shutdown() (at interpreter exit) closes every handler: flush the file then
        self.shutdown()
        super().close()


_handler: NonBlockingHandler | None = None


def setup(log_file: Path | None, level: str, *, stderr_fd: int | None = -1) -> None:
    """Log to `log_file` (rotating) and stderr (fd 2, or `stderr_fd`; None for none)."""
    global _handler
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if _handler is not None:
        _handler.shutdown()
    if stderr_fd == -1:
        stderr_fd = _stderr_fd()
    _handler = NonBlockingHandler(log_file=log_file, stderr_fd=stderr_fd)
    root.addHandler(_handler)
    logging.captureWarnings(True)  # warnings.showwarning writes to sys.stderr: route it through us
    set_level(level)
    if _handler.file_error is not None:
        # an unwritable log directory must not keep the daemon from serving; stderr still logs
        logging.getLogger("sidecar").warning("cannot write the log file %s: %s", log_file, _handler.file_error)


def _stderr_fd() -> int | None:
    stream = sys.__stderr__
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return None


def handler() -> NonBlockingHandler | None:
    """The handler `setup` put on the root logger."""
    return _handler


#: libraries that log a line per request at INFO (httpx: "HTTP Request: POST ..."); below
#: debug they would put a log write on every provider call's path and flood the file
CHATTY_LIBRARIES = ("httpx", "httpcore")


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS.get(level, logging.INFO))
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)


def dropped() -> dict[str, int]:
    """Records left out per destination ("file", "stderr") since `setup`."""
    return _handler.dropped() if _handler is not None else {}


def shutdown() -> None:
    """Flush the log file; do not wait for a stderr nobody reads. Logging after this goes
    synchronously to the file only."""
    if _handler is not None:
        _handler.shutdown()

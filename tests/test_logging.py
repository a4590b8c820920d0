"""Logging never blocks serving: a stderr pipe nobody reads costs stderr lines, never answers.

Unit tests drive `sidecar.logs.NonBlockingHandler` with a pipe in place of fd 2; end-to-end
tests start a real daemon whose stderr is a pipe the test never reads.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidecar import logs
from sidecar.client import DaemonClient, request_message

TIMEOUT = 60


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    return r, w


@pytest.fixture
def handler_factory() -> Iterator[Callable[..., logs.NonBlockingHandler]]:
    """Build handlers on a private logger (not the root: pytest's own handlers stay put)."""
    made: list[tuple[logging.Logger, logs.NonBlockingHandler]] = []

    def make(logger_name: str, **kwargs: Any) -> logs.NonBlockingHandler:
        handler = logs.NonBlockingHandler(**kwargs)
        logger = logging.getLogger(logger_name)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        made.append((logger, handler))
        return handler

    yield make
    for logger, handler in made:
        handler.shutdown()
        logger.removeHandler(handler)
        logger.propagate = True


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_records_reach_the_file_in_the_format(tmp_path: Path, handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"
    r, w = _pipe()
    try:
        handler = handler_factory("t.file", log_file=log_file, stderr_fd=w)
        log = logging.getLogger("t.file")
        log.info("hello %s", "world")
        handler.shutdown()
        text = log_file.read_text()
        assert f" INFO t.file [{os.getpid()}]: hello world\n" in text
        assert b"hello world" in _read_all(r)  # a reader was there: stderr got it too
        assert handler.dropped() == {"file": 0, "stderr": 0}
    finally:
        os.close(r)
        os.close(w)


def test_tracebacks_are_formatted_into_the_file(tmp_path: Path, handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    log_file = tmp_path / "sidecar.log"
    handler = handler_factory("t.exc", log_file=log_file, stderr_fd=None)

    def inner() -> None:
        raise ValueError("the cause, in the file")

    try:
        inner()
    except ValueError:
        logging.getLogger("t.exc").exception("it failed")
    handler.shutdown()
    text = log_file.read_text()
    assert "ERROR t.exc" in text and "it failed" in text
    assert "Traceback (most recent call last):" in text
    assert "in inner" in text and "ValueError: the cause, in the file" in text


def test_an_unread_stderr_pipe_costs_drops_not_time(tmp_path: Path, handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    log_file = tmp_path / "sidecar.log"
    r, w = _pipe()
    try:
        handler = handler_factory("t.block", log_file=log_file, stderr_fd=w)
        log = logging.getLogger("t.block")
        began = time.perf_counter()
        for i in range(10_000):
            log.debug("record %05d %s", i, "x" * 60)
        caller_seconds = time.perf_counter() - began
        # ~10 µs per record here; a blocking handler would never get past ~700 records
        assert caller_seconds < 1.0, caller_seconds
        assert handler.stderr is not None
        assert handler.stderr.blocked(0.05)  # its thread sits in a write to the full pipe
        shutdown_began = time.perf_counter()
        handler.shutdown()
        assert time.perf_counter() - shutdown_began < 2.0  # it did not wait on stderr
        drops = handler.dropped()
        # 64 KiB of pipe plus the bounded queue went to stderr; the rest was dropped and counted
        assert drops["stderr"] > 10_000 - (65536 // 80) - logs.STDERR_QUEUE - logs.BATCH, drops
        assert drops["file"] == 0
        lines = log_file.read_text().splitlines()
        assert len(lines) == 10_000  # the file keeps everything, in order
        assert [int(line.split("record ")[1][:5]) for line in lines] == list(range(10_000))
    finally:
        os.close(r)
        os.close(w)


def test_stderr_that_drains_later_is_told_how_many_were_left_out(
        tmp_path: Path, handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    r, w = _pipe()
    try:
        handler = handler_factory("t.late", log_file=None, stderr_fd=w, stderr_queue=10)
        log = logging.getLogger("t.late")
        for i in range(3_000):
            log.info("filler %05d %s", i, "y" * 60)
        dropped = handler.dropped()["stderr"]
        assert dropped > 0
        received = _read_all(r)  # the shell reads at last
        deadline = time.monotonic() + 10
        while b"left out of stderr" not in received and time.monotonic() < deadline:
            log.info("after the drain")
            time.sleep(0.02)
            received += _read_all(r)
        assert b"log record(s) were left out of stderr" in received
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("broken", ["closed-reader", "closed-fd"])
def test_a_broken_stderr_neither_raises_nor_spins(tmp_path: Path, broken: str,
                                                 handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    log_file = tmp_path / "sidecar.log"
    r, w = _pipe()
    if broken == "closed-reader":
        os.close(r)  # EPIPE on write (Python ignores SIGPIPE)
        fd = w
    else:
        os.close(r)
        os.close(w)
        fd = w  # EBADF on write
    try:
        handler = handler_factory("t.broken", log_file=log_file, stderr_fd=fd)
        log = logging.getLogger("t.broken")
        for i in range(500):
            log.warning("still logging %d", i)
        assert handler.stderr is not None
        deadline = time.monotonic() + 5
        while not handler.stderr.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handler.stderr.closed  # it gave up on stderr, once
        cpu_before = time.process_time()
        time.sleep(0.3)
        assert time.process_time() - cpu_before < 0.2  # nothing spins
        log.warning("after the break")
        handler.shutdown()
        assert handler.dropped()["stderr"] >= 1
        assert log_file.read_text().count("still logging") == 500
        assert "after the break" in log_file.read_text()
    finally:
        if broken == "closed-reader":
            os.close(w)


@pytest.fixture
def root_setup(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """`logs.setup` is the caller's to make, on (log file, stderr write end); the root
    logger, the libraries' levels and warnings capture are put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    r, w = _pipe()
    try:
        yield tmp_path / "logs" / "sidecar.log", w
    finally:
        logs.shutdown()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name in logs.CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.captureWarnings(False)
        os.close(r)
        os.close(w)


def test_setup_routes_the_root_logger_and_shutdown_flushes(root_setup: tuple[Path, int]) -> None:
    log_file, stderr_fd = root_setup
    root = logging.getLogger()
    logs.setup(log_file, "debug", stderr_fd=stderr_fd)
    assert root.level == logging.DEBUG
    assert [type(h) for h in root.handlers] == [logs.NonBlockingHandler]
    logging.getLogger("sidecar.test").debug("through the root %d", 42)
    logs.set_level("warning")
    logging.getLogger("sidecar.test").info("filtered out")
    logs.shutdown()
    logging.getLogger("sidecar.test").warning("after shutdown")  # synchronously, to the file
    text = log_file.read_text()
    assert "through the root 42" in text and "filtered out" not in text
    assert "after shutdown" in text
    assert logs.dropped() == {"file": 0, "stderr": 1}  # the late record skipped stderr


def test_per_request_library_lines_only_at_debug(root_setup: tuple[Path, int]) -> None:
    """httpx logs each request at INFO: kept out of the log unless the level is debug."""
    log_file, stderr_fd = root_setup
    logs.setup(log_file, "info", stderr_fd=stderr_fd)
    logging.getLogger("httpx").info("HTTP Request: POST at info")
    logging.getLogger("httpx").warning("httpx warning kept")
    logging.getLogger("sidecar.test").info("own info kept")
    logs.set_level("debug")
    logging.getLogger("httpx").info("HTTP Request: POST at debug")
    logs.shutdown()
    text = log_file.read_text()
    assert "at info" not in text
    assert "httpx warning kept" in text and "own info kept" in text and "at debug" in text


def test_the_log_file_rotates(tmp_path: Path, handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"
    handler = handler_factory("t.rotate", log_file=log_file, stderr_fd=None)
    rotating = handler.rotating
    assert rotating is not None and Path(rotating.baseFilename) == log_file
    assert rotating.maxBytes == logs.MAX_BYTES and rotating.backupCount == logs.BACKUP_COUNT
    rotating.maxBytes = 4096  # rotate sooner than the production limit to see it happen
    for i in range(200):
        logging.getLogger("t.rotate").info("line %03d %s", i, "x" * 64)
    handler.shutdown()
    assert log_file.stat().st_size <= 4096
    backups = [log_file.with_name(f"sidecar.log.{n}") for n in range(1, logs.BACKUP_COUNT + 1)]
    assert all(path.exists() for path in backups)
    assert not log_file.with_name(f"sidecar.log.{logs.BACKUP_COUNT + 1}").exists()
    assert "line 199" in log_file.read_text()


def test_an_unwritable_log_directory_still_logs_to_stderr(tmp_path: Path,
                                                          handler_factory: Callable[..., logs.NonBlockingHandler]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    r, w = _pipe()
    try:
        handler = handler_factory("t.nodir", log_file=blocker / "sidecar.log", stderr_fd=w)
        assert handler.file_error is not None and handler.file is None
        logging.getLogger("t.nodir").info("still on stderr")
        handler.shutdown()
        assert b"still on stderr" in _read_all(r)
    finally:
        os.close(r)
        os.close(w)


# ---- end to end: a real daemon whose stderr nobody reads --------------------------------

BATCH = 500


def _pipelined(client: DaemonClient, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send requests in batches of BATCH, one write each, two batches in flight; every
    response, in request order."""
    responses: list[dict[str, Any]] = []
    in_flight: list[list[tuple[Any, Any]]] = []
    for start in range(0, len(requests), BATCH):
        chunk = requests[start:start + BATCH]
        in_flight.append([(m["id"], client.expect(m["id"])) for m in chunk])
        client.send_bytes(b"".join(msgspec.json.encode(m) + b"\n" for m in chunk), raw=True)
        if len(in_flight) > 1:
            responses.extend(client.wait(id_, waiter, TIMEOUT) for id_, waiter in in_flight.pop(0))
    for batch in in_flight:
        responses.extend(client.wait(id_, waiter, TIMEOUT) for id_, waiter in batch)
    return responses


def _log_text(data_dir: Path) -> str:
    files = sorted((data_dir / "logs").glob("sidecar.log*"), reverse=True)
    return "".join(path.read_text(errors="replace") for path in files)


def test_daemon_with_an_unread_stderr_answers_10000_failures(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    client = spawn("--log-level", "debug", stderr=subprocess.PIPE)
    assert client.proc.stderr is not None  # a pipe, and this test never reads it
    began = time.monotonic()
    responses = _pipelined(client, [request_message(i, "debug/fail") for i in range(10_000)])
    assert [r["id"] for r in responses] == list(range(10_000))
    assert all(r["error"]["code"] == -32603 for r in responses)
    assert "result" in client.call("system/ping", timeout=TIMEOUT)
    elapsed = time.monotonic() - began
    # the file has every incident with its traceback (stderr could not take them)
    incidents = {r["error"]["data"]["incidentId"] for r in responses}
    assert client.shutdown(timeout=15) == 0
    text = _log_text(data_dir)
    logged = set(re.findall(r"internal error in debug/fail, incident ([0-9a-f]+)", text))
    assert len(incidents) == 10_000 and logged == incidents, elapsed
    assert text.count("RuntimeError: debug/fail was called; this text must stay in the log") == 10_000


def test_daemon_with_an_unread_stderr_stores_1000_secrets(spawn: Callable[..., DaemonClient], data_dir: Path) -> None:
    client = spawn("--log-level", "debug", stderr=subprocess.PIPE)
    responses = _pipelined(client, [request_message(i, "secrets/set", {"name": f"key-{i:04d}", "value": f"v{i}"})
                                    for i in range(1_000)])
    assert [r["result"]["name"] for r in responses] == [f"key-{i:04d}" for i in range(1_000)]
    assert "result" in client.call("system/ping", timeout=TIMEOUT)
    listed = client.request("secrets/list", timeout=TIMEOUT)["secrets"]
    assert len(listed) == 1_000
    assert client.shutdown(timeout=15) == 0
    stored = set(re.findall(r"secret (key-\d{4}) stored", _log_text(data_dir)))
    assert stored == {f"key-{i:04d}" for i in range(1_000)}

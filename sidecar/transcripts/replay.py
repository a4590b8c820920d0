"""Replaying a transcript against a fresh daemon and reporting every difference.

Client lines are sent in order. The server lines between two client lines form a group:
after sending, the replayer waits (up to `timeout` per group) until every non-optional
message of the group has arrived, in any order. Responses are paired by id, batches by the
ids they answer, notifications by method and content. A message that fits nothing in the
current group is kept: a later group may expect it (a stream that runs late), and whatever
is left when the daemon has exited is reported as unexpected. An optional line that has not
arrived when its group is complete stays welcome later and is never missed.

A transcript of a session that calls an HTTP service (chat with an LLM provider) has a
`<name>.fixtures.json` beside it: the test HTTP server to run on 127.0.0.1
(`tests/support/http_fixture.py`, found relative to that file, so only a dev checkout can
replay it), the responses each route gives in turn, and the base URL the session was recorded
against. Replay starts that server and writes its URL in place of the recorded one into every
client message (server messages that echo it carry a `regex:` matcher).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from sidecar.server.framing import frame
from sidecar.transcripts.format import Line, Transcript, load
from sidecar.transcripts.matching import CompiledMatchers, Mismatch, compare, compare_batch, compile_matchers, short
from sidecar.transcripts.pipe import NOT_JSON, Arrival, DaemonPipe, message_key


@dataclass
class Difference:
    #: the transcript line it concerns (None: a message no line expected)
    lineno: int | None
    what: str
    mismatches: list[Mismatch] = field(default_factory=list)
    detail: str = ""

    def render(self, source: str) -> str:
        where = f"{source}:{self.lineno}" if self.lineno is not None else source
        lines = [f"{where}: {self.what}", *(f"    {m}" for m in self.mismatches)]
        if self.detail:
            lines.append(f"    {self.detail}")
        return "\n".join(lines)


@dataclass
class ReplayReport:
    source: str
    argv: list[str]
    differences: list[Difference] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return not self.differences

    def render(self) -> str:
        if self.ok:
            return (f"{self.source}: ok ({self.sent} sent, {self.received} received, "
                    f"daemon exit code {self.exit_code})")
        head = f"{self.source}: {len(self.differences)} difference(s)"
        return "\n".join([head, *(d.render(self.source) for d in self.differences)])


def _describe(key: tuple[Any, ...]) -> str:
    kind = key[0]
    if kind in ("response", "request"):
        target = "id null" if key[1] is None else f"id {_show_id(key[1])}"
        return f"{kind} ({target})"
    if kind == "notification":
        return f"notification {key[1]}"
    if kind == "batch":
        return "batch response"
    return "raw output" if kind == "raw" else "message"


def _show_id(id_key: tuple[str, Any]) -> str:
    kind, value = id_key
    return value if kind == "json" else msgspec.json.encode(value).decode()


@dataclass
class _Expectation:
    lineno: int
    line: Line
    matchers: CompiledMatchers
    key: tuple[Any, ...]
    done: bool = False

    @classmethod
    def of(cls, lineno: int, line: Line) -> _Expectation:
        key = message_key(line.msg) if line.has_msg else ("raw",)
        return cls(lineno, line, compile_matchers(line.match), key)

    def diff(self, arrival: Arrival) -> list[Mismatch]:
        if not self.line.has_msg:
            expected = self.line.raw_bytes() or b""
            ok = arrival.value is NOT_JSON and arrival.payload.strip() == expected.strip()
            return [] if ok else [Mismatch("$", expected, arrival.payload, "raw output differs")]
        if arrival.value is NOT_JSON:
            return [Mismatch("$", self.line.msg, arrival.payload, "not JSON")]
        if isinstance(self.line.msg, list) and isinstance(arrival.value, list):
            return compare_batch(self.line.msg, arrival.value, self.matchers)
        return compare(self.line.msg, arrival.value, self.matchers)


def daemon_command(transcript: Transcript, data_dir: Path) -> list[str]:
    """This interpreter's `sidecar serve` with the header's arguments and a fresh data dir."""
    args = list(transcript.header.args)
    if not any(a == "--data-dir" or a.startswith("--data-dir=") for a in args):
        args += ["--data-dir", str(data_dir)]
    return [sys.executable, "-m", "sidecar", "serve", *args]


def replay(source: Transcript | Path | str, *, daemon: Sequence[str] | None = None, timeout: float = 10.0,
           stderr: IO[bytes] | int | None = subprocess.DEVNULL, env: dict[str, str] | None = None) -> ReplayReport:
    """Replay a transcript against a fresh daemon (`daemon`: a command line used as it is,
    else this sidecar's serve on a temporary data dir) and report what differed."""
    transcript = source if isinstance(source, Transcript) else load(source)
    fixtures = fixtures_path(transcript.source)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sidecar-replay-"))
        argv = list(daemon) if daemon else daemon_command(transcript, Path(tmp) / "data")
        rewrite: tuple[bytes, bytes] | None = None
        if fixtures is not None:
            try:
                recorded_url, live_url = stack.enter_context(http_fixtures(fixtures))
            except (OSError, ValueError, KeyError, ImportError) as exc:
                report = ReplayReport(transcript.source, argv)
                report.differences.append(Difference(None, f"cannot start the HTTP fixtures of {fixtures}",
                                                     detail=f"{type(exc).__name__}: {exc}"))
                return report
            rewrite = (recorded_url.encode(), live_url.encode())
        return _Replayer(transcript, argv, timeout, stderr, env, rewrite).run()


def fixtures_path(source: str) -> Path | None:
    """`<name>.fixtures.json` beside the transcript `<name>.jsonl`, if there is one."""
    if source.startswith("<"):
        return None
    path = Path(source)
    candidate = path.with_name(path.stem + ".fixtures.json")
    return candidate if candidate.is_file() else None


@contextlib.contextmanager
def http_fixtures(path: Path) -> Iterator[tuple[str, str]]:
    """Serve the routes of a fixtures file; (the recorded base URL, the live one).

    The file: `{"server": "<path of http_fixture.py>", "url": "<recorded base URL>", "routes":
    [{"method", "path", "responses": [R, ...]}]}`, paths relative to the file. R is
    `{"file": ..., "chunkSize"?, "headers"?}` (a recorded body, `Response.from_file`) or the
    fields of `Response` (`status`, `headers`, `body`: a list of strings, `chunked`, `stall`...)."""
    import importlib.util

    spec_data = msgspec.json.decode(path.read_bytes())
    server_file = (path.parent / spec_data["server"]).resolve()
    name = "_sidecar_replay_http_fixture"
    module = sys.modules.get(name)
    if module is None or Path(module.__file__ or "") != server_file:
        spec = importlib.util.spec_from_file_location(name, server_file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {server_file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    with module.HttpFixtureServer() as server:
        for route in spec_data["routes"]:
            responses = []
            for item in route["responses"]:
                item = dict(item)
                if "file" in item:
                    responses.append(module.Response.from_file(path.parent / item.pop("file"),
                                                               chunk_size=item.pop("chunkSize", None), **item))
                else:
                    item["body"] = [chunk.encode() for chunk in item.get("body", [])]
                    responses.append(module.Response(**item))
            server.route(route["method"], route["path"], *responses)
        yield spec_data["url"], server.url


class _Replayer:
    def __init__(self, transcript: Transcript, argv: list[str], timeout: float,
                 stderr: IO[bytes] | int | None, env: dict[str, str] | None,
                 rewrite: tuple[bytes, bytes] | None = None) -> None:
        self.transcript = transcript
        #: (recorded, live) base URL of the HTTP fixtures, replaced in client messages
        self.rewrite = rewrite
        self.timeout = timeout
        self.report = ReplayReport(transcript.source, argv)
        self.daemon = DaemonPipe(argv, stderr, env)
        #: arrivals no group has claimed yet
        self.pool: list[Arrival] = []
        #: optional expectations whose group completed without them
        self.carried: list[_Expectation] = []
        self.exit_checked = False
        self.last_sent: int | None = None

    def run(self) -> ReplayReport:
        try:
            self._run_lines()
        finally:
            code = self.daemon.finish(self.timeout)
            if not self.exit_checked:
                self.report.exit_code = code
            self._drain(time.monotonic() + self.timeout)
            for arrival in self.pool:
                after = f" (arrived after line {arrival.after_lineno})" if arrival.after_lineno else ""
                self.report.differences.append(Difference(None, f"unexpected {_describe(arrival.key)}{after}",
                                                          detail=f"got {arrival.show()}"))
        return self.report

    def _run_lines(self) -> None:
        lines, linenos = self.transcript.lines, self.transcript.linenos
        framing = self.transcript.header.framing
        i = 0
        while i < len(lines):
            line, lineno = lines[i], linenos[i]
            i += 1
            if line.dir == "client":
                if not self._send(line, lineno, framing):
                    return
            elif line.exitCode is not None:
                self._check_exit(line, lineno)
                continue
            else:
                i -= 1  # server messages before any client line: a group of their own
            group = []
            while i < len(lines) and lines[i].dir == "server" and lines[i].is_message:
                group.append(_Expectation.of(linenos[i], lines[i]))
                i += 1
            if group:
                self._match_group(group)

    def _next(self, deadline: float) -> Arrival | None:
        arrival = self.daemon.next(deadline)
        if arrival is not None:
            self.report.received += 1
            arrival.after_lineno = self.last_sent
        return arrival

    def _send(self, line: Line, lineno: int, framing: str) -> bool:
        self.last_sent = lineno
        if line.close:
            self.daemon.close_stdin()
            return True
        raw = line.raw_bytes()
        if raw is not None:
            data = raw
        else:
            payload = msgspec.json.encode(line.msg)
            if self.rewrite is not None:
                payload = payload.replace(*self.rewrite)
            data = frame(payload, framing)
        try:
            self.daemon.send(data)
        except (OSError, ValueError) as exc:  # a broken pipe, or stdin closed by an earlier line
            self.report.differences.append(Difference(lineno, "could not send: the daemon closed its stdin",
                                                      detail=str(exc)))
            return False
        self.report.sent += 1
        return True

    def _check_exit(self, line: Line, lineno: int) -> None:
        """The recorded daemon exited here: so must this one, with the same code."""
        self._drain(time.monotonic() + self.timeout)
        try:
            code: int | None = self.daemon.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.exit_checked = True
        self.report.exit_code = code
        if code != line.exitCode:
            got = "still running" if code is None else f"exit code {code}"
            self.report.differences.append(Difference(lineno, "daemon exit differs",
                                                      detail=f"expected exit code {line.exitCode}, got {got}"))

    def _drain(self, deadline: float) -> None:
        """Read to end of stream: whatever comes goes to carried optionals or the pool."""
        while (arrival := self._next(deadline)) is not None:
            if not self._offer(arrival, []):
                self.pool.append(arrival)

    def _match_group(self, group: list[_Expectation]) -> None:
        for arrival in list(self.pool):
            if self._offer(arrival, group):
                self.pool.remove(arrival)
        deadline = time.monotonic() + self.timeout
        while any(not e.done and not e.line.optional for e in group):
            arrival = self._next(deadline)
            if arrival is None:
                break
            if not self._offer(arrival, group):
                self.pool.append(arrival)
        for expectation in group:
            if expectation.done:
                continue
            if expectation.line.optional:
                self.carried.append(expectation)
                continue
            self._missing(expectation)

    def _offer(self, arrival: Arrival, group: list[_Expectation]) -> bool:
        """Pair an arrival with an expectation; False to keep it for later."""
        key = arrival.key
        current = [e for e in group if not e.done and e.key == key]
        for expectation in current + [e for e in self.carried if e.key == key]:
            if not expectation.diff(arrival):
                expectation.done = True
                if expectation in self.carried:
                    self.carried.remove(expectation)
                return True
        # responses answer a request of this group: one with the right id but the wrong
        # content is a difference now, not something a later group might want
        if current and key[0] in ("response", "batch"):
            expectation = current[0]
            expectation.done = True
            self.report.differences.append(Difference(
                expectation.lineno, f"{_describe(key)} differs", expectation.diff(arrival),
                detail=f"got {arrival.show()}"))
            return True
        return False

    def _missing(self, expectation: _Expectation) -> None:
        same = [a for a in self.pool if a.key == expectation.key]
        if same:
            arrival = same[0]
            self.pool.remove(arrival)
            self.report.differences.append(Difference(
                expectation.lineno, f"{_describe(expectation.key)} differs", expectation.diff(arrival),
                detail=f"got {arrival.show()}"))
            return
        why = "the daemon closed its stdout" if self.daemon.eof else f"nothing within {self.timeout:g} s"
        expected = short(expectation.line.msg, 300) if expectation.line.has_msg else repr(expectation.line.raw_bytes())
        self.report.differences.append(Difference(
            expectation.lineno, f"missing {_describe(expectation.key)} ({why})", detail=f"expected {expected}"))

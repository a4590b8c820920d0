#!/usr/bin/env python3
"""Regenerate tests/transcripts/*.jsonl by driving `sidecar record` with scripted sessions.

Each script talks to `sidecar record` exactly as a shell would, through DaemonClient, and
waits for each answer before the next message, so what is recorded (and which server
messages fall between which client messages) is the same on every run.

    .venv/bin/python tools/record_transcripts.py            # all of them
    .venv/bin/python tools/record_transcripts.py errors     # just errors.jsonl
    .venv/bin/python tools/record_transcripts.py --check    # record to a temp dir and replay each
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sidecar.client import DaemonClient, request_message  # noqa: E402

OUT_DIR = REPO / "tests" / "transcripts"
TIMEOUT = 30.0
INIT_PARAMS = {"clientInfo": {"name": "record_transcripts", "version": "1"},
               "protocolVersion": "2026-11-01", "capabilities": {}}


class Session:
    """One recorded session: `sidecar record` in front of a daemon on a private data dir."""

    def __init__(self, out: Path, description: str, args: list[str], data_dir: Path,
                 framing: str = "ndjson") -> None:
        # the file key backend always: a replay must never touch the OS keyring of the machine
        daemon = [sys.executable, "-m", "sidecar", "serve", "--data-dir", str(data_dir),
                  "--secrets-backend", "file", *args]
        argv = [sys.executable, "-m", "sidecar", "record", "--out", str(out), "--description", description,
                "--", *daemon]
        self.client = DaemonClient(argv, stderr=subprocess.DEVNULL, framing=framing)
        #: the HTTP fixture server's base URL, for a session that calls one (HTTP_FIXTURES)
        self.http_url: str | None = None

    def request(self, request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request and wait for its answer (notifications it causes come first)."""
        return self.client.call(method, params, id=request_id, timeout=TIMEOUT)

    def start(self, request_id: Any, method: str, params: Any = None) -> None:
        """Send a request without waiting: its answer comes after a later message."""
        self.client.send(request_message(request_id, method, params))

    def finish(self, request_id: Any) -> dict[str, Any]:
        return self.client.wait(request_id, self.client.expect(request_id), TIMEOUT)

    def notify(self, method: str, params: Any = None) -> None:
        self.client.notify(method, params)

    def send_unanswered(self, payload: Any = None, *, raw: bytes | None = None) -> Any:
        """Send something answered without a usable id (or as a batch): wait for that answer."""
        if raw is not None:
            self.client.send_bytes(raw, raw=True)
        else:
            self.client.send(payload)
        return self.client.unrouted.get(timeout=TIMEOUT)

    def send_with_id(self, request_id: Any, payload: Any) -> dict[str, Any]:
        """Send an arbitrary (possibly invalid) message whose answer carries `request_id`."""
        waiter = self.client.expect(request_id)
        self.client.send(payload)
        return self.client.wait(request_id, waiter, TIMEOUT)

    def wait_notification(self, method: str) -> dict[str, Any]:
        while True:
            note = self.client.notifications.get(timeout=TIMEOUT)
            if note.get("method") in (method, "$/eof"):
                return note

    def initialize(self, request_id: Any = 1) -> None:
        self.request(request_id, "initialize", INIT_PARAMS)
        self.notify("initialized")

    def end(self, request_id: Any) -> None:
        """shutdown, then exit."""
        self.request(request_id, "shutdown")
        self.exit()

    def exit(self) -> None:
        """The exit notification; the daemon (and so the recorder) exits before we close our
        end, so the transcript ends with the daemon's exit code and nothing else."""
        self.notify("exit")
        self.client.proc.wait(timeout=TIMEOUT)
        self.client.close(timeout=TIMEOUT)


# ---- the scripts ---------------------------------------------------------------------

def lifecycle(s: Session) -> None:
    s.request(1, "system/ping")  # before initialize: not_initialized
    s.initialize(2)
    s.request(3, "initialize", INIT_PARAMS)  # twice: invalid request
    s.request(4, "system/ping")
    s.request(5, "shutdown")
    s.request(6, "system/ping")  # after shutdown: shutting_down
    s.exit()  # exit code 0 after shutdown


def eof(s: Session) -> None:
    s.initialize()
    s.request(2, "system/ping")
    s.start(3, "debug/sleep", {"seconds": 60})
    # stdin closes with a request running: it gets a short grace, is cancelled and answered,
    # then the daemon exits without having been told to
    s.client.close(timeout=TIMEOUT)


def ping(s: Session) -> None:
    s.initialize()
    s.request(2, "system/ping")
    s.request("ping-3", "system/ping")  # string ids come back as strings
    s.request(4, "system/ping", {})
    s.notify("system/ping")  # a notification: no answer
    s.request(5, "system/ping")
    s.end(6)


def errors(s: Session) -> None:
    s.initialize()
    s.send_unanswered(raw=b"garbage\n")  # -32700, and the daemon keeps reading
    s.send_unanswered(raw=b'{"jsonrpc":"2.0","id":2,"method":\n')  # truncated JSON
    s.send_with_id(3, {"jsonrpc": "1.0", "id": 3, "method": "system/ping"})  # -32600
    s.send_with_id(4, {"jsonrpc": "2.0", "id": 4})  # no method: -32600
    s.send_unanswered({"jsonrpc": "2.0", "id": {"not": "an id"}, "method": "system/ping"})
    s.send_unanswered([])  # an empty batch: one -32600
    s.send_unanswered([  # one answer per element, in any order; none for the notification
        1,
        {"jsonrpc": "2.0", "id": 10, "method": "system/ping"},
        {"jsonrpc": "2.0", "id": 11, "method": "no/such"},
        {"jsonrpc": "2.0", "method": "system/ping"},
        {"jsonrpc": "2.0", "id": 12, "method": "system/stream", "params": {"count": "three"}},
        {"jsonrpc": "2.0", "id": 13, "method": "settings/get", "params": {"key": "log.level"}},
    ])
    s.request(20, "no/such")  # -32601 naming the method
    s.request(21, "system/stream", {"count": -1})  # -32602 naming $.params.count
    s.request(22, "debug/sleep", {})  # -32602: a required field is missing
    s.request(23, "system/ping", [1, 2])  # -32602: positional params where an object is due
    s.request(24, "settings/set", {"key": "log.level", "value": "loud"})  # -32602 at $.params.value
    s.request(25, "debug/fail")  # -32603: an opaque message and an incident id
    s.request(26, "system/ping")  # still serving
    s.request(27, "settings/get", {"key": "no.such"})  # not_found
    s.request(28, "secrets/delete", {"name": "no-such-secret"})  # not_found
    # header args set --max-message-bytes 1024: this one is too large, and the stream resyncs
    s.send_unanswered({"jsonrpc": "2.0", "id": 29, "method": "debug/print", "params": {"text": "x" * 2048}})
    s.request(30, "system/ping")
    s.end(31)


def cancellation(s: Session) -> None:
    s.initialize()
    s.start(2, "debug/sleep", {"seconds": 60})
    s.notify("$/cancelRequest", {"id": 2})
    s.finish(2)  # -32800
    # header args set --max-concurrency 1: request 4 waits behind 3; cancelled while queued
    # it never starts
    s.start(3, "debug/sleep", {"seconds": 60})
    s.start(4, "debug/sleep", {"seconds": 60})
    s.notify("$/cancelRequest", {"id": 4})
    s.finish(4)
    s.notify("$/cancelRequest", {"id": 3})
    s.finish(3)
    s.notify("$/cancelRequest", {"id": 99})  # nothing to cancel: no answer, no harm
    s.request(5, "debug/sleep", {"seconds": 0})
    s.notify("$/cancelRequest", {"id": 5})  # already answered: nothing happens
    s.request(6, "system/ping")
    s.end(7)


def streaming(s: Session) -> None:
    s.initialize()
    s.request(2, "system/stream", {"count": 4, "chunkBytes": 8})  # 4 chunks, then the digest
    s.request(3, "system/stream", {"count": 0})
    # the first chunk is a minute away: cancelled before it, no chunk is ever sent
    s.start(4, "system/stream", {"count": 5, "intervalMs": 60000})
    s.notify("$/cancelRequest", {"id": 4})
    s.finish(4)
    s.end(5)


def settings(s: Session) -> None:
    s.initialize()
    s.request(2, "settings/get", {"key": "server.slowRequestMs"})
    s.request(3, "settings/set", {"key": "server.slowRequestMs", "value": 250})  # + settings/changed
    s.request(4, "settings/set", {"key": "server.slowRequestMs", "value": 250})  # unchanged: no note
    s.request(5, "settings/get", {"key": "server.slowRequestMs"})
    s.request(6, "settings/set", {"key": "server.slowRequestMs", "value": "fast"})  # -32602
    s.request(7, "settings/list")
    s.request(8, "settings/reset", {"key": "server.slowRequestMs"})  # + settings/changed
    s.request(9, "settings/get", {"key": "server.slowRequestMs"})
    s.end(10)


def secrets(s: Session) -> None:
    s.initialize()
    s.request(2, "secrets/list")
    s.request(3, "secrets/set", {"name": "openai/api-key", "value": "sk-test-not-a-real-key"})
    s.request(4, "secrets/list")  # the name, never the value
    s.request(5, "secrets/delete", {"name": "openai/api-key"})
    s.request(6, "secrets/delete", {"name": "openai/api-key"})  # not_found
    s.end(7)


def stdout_purity(s: Session) -> None:
    s.initialize()
    s.request(2, "debug/print", {"text": "a stray print from a library"})  # nothing but the answer
    s.request(3, "system/ping")
    s.end(4)


def content_length(s: Session) -> None:
    s.initialize()
    s.request(2, "system/ping")
    s.request(3, "system/stream", {"count": 2, "chunkBytes": 4})
    s.end(4)


def agents_browse(s: Session) -> None:
    """Browse the bundled agents, then search and pick one (a shell's agent picker)."""
    s.initialize()
    s.request(2, "agents/categories")
    first = s.request(3, "agents/list", {"category": "engineering", "limit": 5})
    s.request(4, "agents/list", {"category": "engineering", "limit": 5, "cursor": first["result"]["nextCursor"]})
    s.request(5, "agents/list", {"tag": "translation"})
    s.request(6, "agents/get", {"name": "code-reviewer"})
    s.request(7, "agents/search", {"query": "review pull request", "limit": 3})
    s.request(8, "agents/search", {"query": "pyhton", "limit": 3})  # a typo in a name
    s.request(9, "agents/search", {"query": "번역해줘", "limit": 3})  # Korean, with an ending
    s.request(10, "agents/select", {"prompt": "my SQL query is slow, can you help tune it?"})
    s.request(11, "agents/select", {"prompt": "hello there"})  # nothing matches well: the fallback
    s.request(12, "agents/get", {"name": "no-such-agent"})  # not_found naming it
    s.request(13, "agents/search", {"query": "  "})  # invalid params
    s.request(14, "agents/problems")
    s.end(15)
    _bundled_paths_anywhere(s)


def _bundled_paths_anywhere(s: Session) -> None:
    """The recording holds this checkout's absolute path of each bundled agent file: match it
    by its end, so the session replays wherever the repository is."""
    import json
    import re

    argv = list(s.client.proc.args)  # type: ignore[arg-type]
    out = Path(argv[argv.index("--out") + 1])
    lines = out.read_text(encoding="utf-8").rstrip("\n").split("\n")  # (not splitlines: U+2028 is no line end)
    bundled = str(REPO / "sidecar" / "agents" / "bundled") + os.sep
    for i, line in enumerate(lines):
        event = json.loads(line)
        result = event.get("msg", {}).get("result") if isinstance(event.get("msg"), dict) else None
        path = result.get("path") if isinstance(result, dict) else None
        if isinstance(path, str) and path.startswith(bundled):
            tail = "[/\\\\]".join(re.escape(part) for part in ["sidecar", "agents", "bundled",
                                                               *Path(path[len(bundled):]).parts])
            event.setdefault("match", {})["$.result.path"] = f"regex:{tail}$"
            lines[i] = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


TEXT_DELTA = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
              '"delta":{"type":"text_delta","text":"Once upon a time"}}\n\n')
#: name -> what the HTTP fixture server answers while the session is recorded and replayed
#: (written to `<name>.fixtures.json` with the URL the session was recorded against)
SSE = {"content-type": "text/event-stream"}
HTTP_FIXTURES: dict[str, dict[str, Any]] = {
    "chat": {"server": "../support/http_fixture.py", "routes": [{"method": "POST", "path": "/v1/messages",
                                                                 "responses": [
        # 1. an agent's reply, streamed; 2-3. a tool round: the model calls builtin__current_time,
        # then answers; 4. a reply that never ends (cancelled), and so every call after it
        {"file": "../fixtures/llm/anthropic_text.sse", "chunkSize": 64, "headers": SSE},
        {"file": "../fixtures/llm/anthropic_tool.sse", "chunkSize": 64, "headers": SSE},
        {"file": "../fixtures/llm/anthropic_text.sse", "chunkSize": 64, "headers": SSE},
        {"status": 200, "headers": SSE, "chunked": True, "stall": True, "body": [
            'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929",'
            '"usage":{"input_tokens":12,"output_tokens":1}}}\n\n', TEXT_DELTA]},
    ]}]},
}


def chat(s: Session) -> None:
    s.initialize()
    s.request(2, "providers/configure", {"id": "claude", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                         "baseUrl": s.http_url})  # the first provider: the default
    s.request(3, "chat/send", {"message": "Say hello", "agent": "general-assistant"})  # deltas, then the turn
    s.request(4, "chat/send", {"message": "What time is it?", "agent": "general-assistant"})  # a tool round
    s.start(5, "chat/send", {"message": "Tell me a long story", "agent": "general-assistant"})
    while True:  # (the queue still holds the earlier requests' deltas)
        params = s.wait_notification("chat/delta")["params"]
        if params.get("requestId") == 5 and params.get("type") == "text_delta":
            break
    s.notify("$/cancelRequest", {"id": 5})  # the partial reply is stored, marked cancelled
    s.finish(5)  # -32800
    s.request(6, "usage/summary", {"groupBy": "provider"})  # four calls: the tool round made two
    s.request(7, "audit/list", {})
    s.end(8)


def chat_matchers(line: Any) -> dict[str, str]:
    """Matchers for what differs between runs of the chat session beyond the default ones:
    the fixture server's port, ids, the current time a tool answered."""
    import re

    found: dict[str, str] = {}
    message = line.msg
    result = message.get("result") if isinstance(message, dict) else None
    params = message.get("params") if isinstance(message, dict) else None
    time_result = ("regex:^" + re.escape('{"iso": "') + r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
                   + re.escape('", "timezone": "UTC", "weekday": "') + r"[A-Za-z]+"
                   + re.escape('", "unix": ') + r"\d+\}$")
    if isinstance(result, dict):
        if "baseUrl" in result:
            found["$.result.baseUrl"] = r"regex:^http://127\.0\.0\.1:\d+$"
        for key in ("conversationId", "messageId"):
            if key in result:
                found[f"$.result.{key}"] = "string"
        for i, call in enumerate(result.get("toolCalls", [])):
            if call.get("name") == "builtin__current_time":
                found[f"$.result.toolCalls[{i}].result"] = time_result
        if "entries" in result:
            found["$.result.entries[*].id"] = "string"
            found["$.result.entries[*].conversationId"] = "string"
    if isinstance(params, dict) and params.get("type") == "tool_result":
        found["$.params.content"] = time_result
        found["$.params.ms"] = "number"
    return found


#: name -> (description, daemon args, framing, script)
SCRIPTS: dict[str, tuple[str, list[str], str, Callable[[Session], None]]] = {
    "lifecycle": ("A request before initialize is refused; initialize, initialized, a second initialize "
                  "refused; ping; shutdown; requests after shutdown refused; exit with code 0.",
                  [], "ndjson", lifecycle),
    "eof": ("The daemon exits when stdin closes, answering the request still running with -32800.",
            ["--debug-methods"], "ndjson", eof),
    "ping": ("system/ping with integer and string ids and with empty params; as a notification it "
             "gets no answer.", [], "ndjson", ping),
    "errors": ("Every kind of error: parse errors (and reading goes on), invalid requests, an empty "
               "batch, a batch mixing good and bad elements, unknown method, invalid params with the "
               "field path, an internal error with an incident id, application not_found errors, an "
               "oversized message that the stream resynchronises after.",
               ["--debug-methods", "--max-message-bytes", "1024"], "ndjson", errors),
    "cancellation": ("$/cancelRequest answers -32800 for a running request and for one still queued "
                     "behind --max-concurrency 1; cancelling an unknown or finished request does nothing.",
                     ["--debug-methods", "--max-concurrency", "1"], "ndjson", cancellation),
    "streaming": ("system/stream sends its chunks as system/streamChunk notifications tied to the "
                  "request, then the final result; an empty stream; a stream cancelled before its "
                  "first chunk.", [], "ndjson", streaming),
    "settings": ("settings get/set/list/reset with settings/changed notifications (none when a value "
                 "does not change) and a value of the wrong type refused.", [], "ndjson", settings),
    "secrets": ("secrets set/list/delete: names and timestamps come back, values never; deleting "
                "twice answers not_found.", [], "ndjson", secrets),
    "stdout": ("debug/print writes to stdout from Python and from fd 1: none of it reaches the "
               "protocol stream.", ["--debug-methods"], "ndjson", stdout_purity),
    "agents_browse": ("An agent picker: categories, a category listed a page at a time, a tag, one agent in full "
                      "(its prompt and file), then search (ranked, with what matched; a typo; Korean), select "
                      "for a prompt with its reason and the general fallback, not_found for an unknown agent, "
                      "an empty query refused.", [], "ndjson", agents_browse),
    "chat": ("An agent chat against a recorded Anthropic stream (tests/transcripts/chat.fixtures.json): "
             "providers/configure, chat/send streaming chat/delta events then the whole turn, a tool round "
             "(builtin__current_time), a reply cancelled mid-stream (-32800, the partial reply stored), usage and "
             "audit.", [], "ndjson", chat),
    "content_length": ("The same protocol with LSP-style Content-Length framing, detected from the first "
                       "bytes and answered in kind.", [], "content-length", content_length),
}


def record(name: str, out_dir: Path) -> Path:
    description, args, framing, script = SCRIPTS[name]
    out = out_dir / f"{name}.jsonl"
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sidecar-record-"))
        http_url = None
        if name in HTTP_FIXTURES:
            from sidecar.transcripts.replay import http_fixtures

            fixtures = out_dir / f"{name}.fixtures.json"
            spec = {**HTTP_FIXTURES[name], "url": "http://127.0.0.1:0"}
            # the paths in it are relative to tests/transcripts/
            spec["server"] = str((OUT_DIR / spec["server"]).resolve())
            spec["routes"] = [{**r, "responses": [{**x, "file": str((OUT_DIR / x["file"]).resolve())}
                                                  if "file" in x else x for x in r["responses"]]}
                              for r in spec["routes"]]
            scratch = Path(tmp) / "serve.fixtures.json"
            scratch.write_text(json.dumps(spec))
            _, http_url = stack.enter_context(http_fixtures(scratch))
        session = Session(out, description, args, Path(tmp) / "data", framing)
        session.http_url = http_url
        try:
            script(session)
        finally:
            session.client.close(timeout=TIMEOUT)
    if http_url is not None:
        _write_fixtures(name, out_dir, http_url)
    return out


def _write_fixtures(name: str, out_dir: Path, url: str) -> None:
    """`<name>.fixtures.json` beside the transcript (paths relative to it, as in
    tests/transcripts/), and the session's own matchers added to the transcript."""
    import msgspec

    from sidecar.transcripts import load

    spec = dict(HTTP_FIXTURES[name])
    if out_dir.resolve() != OUT_DIR.resolve():  # --check: a temporary directory
        spec["server"] = str((OUT_DIR / spec["server"]).resolve())
        spec["routes"] = [{**r, "responses": [{**x, "file": str((OUT_DIR / x["file"]).resolve())}
                                              if "file" in x else x for x in r["responses"]]}
                          for r in spec["routes"]]
    (out_dir / f"{name}.fixtures.json").write_text(json.dumps({**spec, "url": url}, indent=1) + "\n")
    out = out_dir / f"{name}.jsonl"
    transcript = load(out)
    transcript.lines = [msgspec.structs.replace(line, match={**line.match, **chat_matchers(line)})
                        if line.dir == "server" and line.has_msg else line for line in transcript.lines]
    out.write_text(transcript.dumps())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"which to record (default: all of {', '.join(SCRIPTS)})")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true",
                        help="record into a temporary directory and replay each; write nothing")
    args = parser.parse_args(argv)
    names = args.names or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"no script named {', '.join(unknown)} (known: {', '.join(SCRIPTS)})")
    if not args.check:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            print(f"recorded {record(name, args.out_dir)}")
        return 0
    from sidecar.transcripts import replay

    failed = 0
    with tempfile.TemporaryDirectory(prefix="sidecar-transcripts-") as tmp:
        for name in names:
            report = replay(record(name, Path(tmp)))
            print(report.render())
            failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

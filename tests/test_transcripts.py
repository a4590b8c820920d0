"""Transcripts: the committed sessions replay; recording round-trips; replay finds differences.

The matching engine is also tested on its own (no daemon) with examples and hypothesis.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.client import DaemonClient
from sidecar.transcripts import (Header, Line, Transcript, TranscriptError, default_matchers, load, loads, replay,
                                 serve_args)
from sidecar.transcripts.matching import compare, compare_batch, format_path, parse_path
from tests.conftest import serve_argv

TRANSCRIPTS = Path(__file__).parent / "transcripts"
COMMITTED = sorted(TRANSCRIPTS.glob("*.jsonl"))
#: generous: a liveness bound for a loaded 2-core machine, not a performance claim
TIMEOUT = 20.0


def record_argv(out: Path, data_dir: Path, *daemon_extra: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "record", "--out", str(out), "--description", "test session",
            "--", *serve_argv(data_dir, *daemon_extra)]


def edited(source: Path, dest: Path, edit: Any) -> Path:
    """A copy of a transcript with its lines (as dicts, header excluded) passed through `edit`."""
    header, *lines = source.read_text().splitlines()
    new = edit([msgspec.json.decode(line) for line in lines])
    dest.write_text("\n".join([header, *(msgspec.json.encode(line).decode() for line in new)]) + "\n")
    return dest


# ---- the committed transcripts ------------------------------------------------------

def test_the_required_sessions_are_committed() -> None:
    names = {p.stem for p in COMMITTED}
    assert {"lifecycle", "ping", "errors", "cancellation", "streaming", "settings"} <= names


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_transcript_replays(path: Path) -> None:
    report = replay(path, timeout=TIMEOUT)
    assert report.ok, report.render()
    assert report.sent > 0 and report.received > 0


def test_errors_transcript_covers_every_kind() -> None:
    """The errors session shows each JSON-RPC error code and the application kinds asked for."""
    transcript = load(TRANSCRIPTS / "errors.jsonl")
    codes: set[int] = set()
    kinds: set[str] = set()
    for line in transcript.lines:
        if line.dir != "server" or not line.has_msg:
            continue
        for message in line.msg if isinstance(line.msg, list) else [line.msg]:
            if "error" in message:
                codes.add(message["error"]["code"])
                kinds.add(message["error"]["data"]["kind"])
    assert {-32700, -32600, -32601, -32602, -32603, -32001} <= codes
    assert {"not_found", "internal", "invalid_params", "resource_exhausted"} <= kinds
    assert any(line.raw_bytes() == b"garbage\n" for line in transcript.lines)


# ---- recording ----------------------------------------------------------------------

def test_record_then_replay_round_trips(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "session.jsonl"
    client = DaemonClient(record_argv(out, data_dir))
    try:
        client.initialize("round-trip")
        assert client.request("system/ping") == {"pong": True}
        info = client.request("system/info")  # full of volatile values: pids, paths, times
        assert info["dataDir"] == str(data_dir)
        result = client.request("system/stream", {"count": 3, "chunkBytes": 5})
        chunks = [client.notifications.get(timeout=TIMEOUT) for _ in range(3)]
        assert [c["params"]["seq"] for c in chunks] == [0, 1, 2]
        assert result["sha256"] == hashlib.sha256("".join(c["params"]["data"] for c in chunks).encode()).hexdigest()
        failed = client.call("debug/fail")
        assert failed["error"]["code"] == -32603
        client.send_bytes(b"{not json\n", raw=True)
        assert client.unrouted.get(timeout=TIMEOUT)["error"]["code"] == -32700
        client.request("settings/set", {"key": "log.level", "value": "warning"})
        client.request("system/metrics")
        client.request("system/health")
        client.request("secrets/set", {"name": "k", "value": "v"})
        client.request("secrets/list")
        assert client.shutdown() == 0
    finally:
        client.close()
    assert client.garbage == []  # the recorder kept stdout pure

    transcript = load(out)
    assert transcript.header.args == ["--secrets-backend", "file", "--debug-methods"]  # no --data-dir
    assert transcript.header.description == "test session"
    assert transcript.lines[-1].exitCode == 0
    dirs = [line.dir for line in transcript.lines]
    assert dirs.count("client") >= 14 and dirs.count("server") >= 14
    assert any(line.raw == "{not json\n" for line in transcript.lines)
    info_line = next(line for line in transcript.lines
                     if line.dir == "server" and line.has_msg and line.msg.get("id") == 3)
    assert info_line.match["$.result.process.pid"] == "int"
    assert info_line.match["$.result.dataDir"] == "path"

    report = replay(out, timeout=TIMEOUT)
    assert report.ok, report.render()
    assert report.exit_code == 0


def test_recorder_passes_large_messages_both_ways(tmp_path: Path, data_dir: Path) -> None:
    """Megabytes in flight in both directions at once: nothing deadlocks, nothing changes."""
    out = tmp_path / "large.jsonl"
    client = DaemonClient(record_argv(out, data_dir))
    try:
        client.initialize("large")
        text = "x" * (3 << 20)
        waiters = {i: client.expect(i) for i in (10, 11, 12)}
        client.send({"jsonrpc": "2.0", "id": 10, "method": "system/stream",
                     "params": {"count": 8, "chunkBytes": 1 << 20}})
        client.send({"jsonrpc": "2.0", "id": 11, "method": "debug/print", "params": {"text": text}})
        client.send({"jsonrpc": "2.0", "id": 12, "method": "system/ping"})
        stream = client.wait(10, waiters[10], TIMEOUT)["result"]
        assert client.wait(11, waiters[11], TIMEOUT)["result"] == {}
        assert client.wait(12, waiters[12], TIMEOUT)["result"] == {"pong": True}
        data = "".join(client.notifications.get(timeout=TIMEOUT)["params"]["data"] for _ in range(8))
        assert stream["bytes"] == 8 << 20 and stream["sha256"] == hashlib.sha256(data.encode()).hexdigest()
    finally:
        client.close()
    assert client.garbage == []
    transcript = load(out)
    sent = next(line for line in transcript.lines
                if line.dir == "client" and line.has_msg and line.msg.get("id") == 11)
    assert sent.msg["params"]["text"] == text


def test_record_cli_keeps_stdout_to_the_daemon_output(tmp_path: Path, data_dir: Path) -> None:
    """Driven from a pipe, as a shell would: stdout is exactly the daemon's messages."""
    out = tmp_path / "piped.jsonl"
    stdin = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}\n'
             b'{"jsonrpc":"2.0","id":2,"method":"debug/print","params":{"text":"stray"}}\n'
             b'{"jsonrpc":"2.0","id":3,"method":"system/ping"}\n')
    proc = subprocess.run(record_argv(out, data_dir), input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    messages = [msgspec.json.decode(line) for line in proc.stdout.splitlines()]
    assert sorted(m["id"] for m in messages) == [1, 2, 3]  # debug/print runs in a worker thread
    lines = load(out).lines
    position = {(line.dir, line.msg["id"]): i for i, line in enumerate(lines) if line.has_msg}
    for request_id in (1, 2, 3):  # every request is written down before its answer
        assert position[("client", request_id)] < position[("server", request_id)]
    assert len(position) == 6
    assert any(line.close for line in lines) and lines[-1].exitCode == 0
    assert replay(out, timeout=TIMEOUT).ok


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_recorder_redacts_secret_values_and_keeps_the_file_private(tmp_path: Path) -> None:
    out = tmp_path / "secret.jsonl"
    out.write_text("an older transcript\n")
    out.chmod(0o644)
    stdin = (b'{"jsonrpc":"2.0","id":1,"method":"secrets/set","params":{"name":"k","value":"hunter2-one"}}\n'
             b'[{"jsonrpc":"2.0","id":2,"method":"secrets/set","params":{"name":"k","value":"hunter2-two"}},'
             b'{"jsonrpc":"2.0","id":3,"method":"settings/set","params":{"key":"log.level","value":"debug"}}]\n'
             # duplicate keys are normally kept raw; a secret must not be
             b'{"jsonrpc":"2.0","id":4,"method":"secrets/set","params":{"name":"k","value":"a","value":"hunter2-3"}}\n')
    received = tmp_path / "received"
    # a stand-in daemon that keeps what it is given and answers nothing
    daemon = [sys.executable, "-c", "import sys; open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())",
              str(received)]
    argv = [sys.executable, "-m", "sidecar", "record", "--out", str(out), "--", *daemon]
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert received.read_bytes() == stdin  # the daemon was given every byte as sent
    text = out.read_text()
    assert "hunter2" not in text
    assert out.stat().st_mode & 0o777 == 0o600
    sent = [line.msg for line in load(out).lines if line.dir == "client" and line.has_msg]
    assert sent[0]["params"] == {"name": "k", "value": "<redacted>"}
    assert sent[1][0]["params"] == {"name": "k", "value": "<redacted>"}
    assert sent[1][1]["params"]["value"] == "debug"  # only secrets are redacted
    assert sent[2]["params"] == {"name": "k", "value": "<redacted>"}


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_transcripts_hold_no_secret_values(path: Path) -> None:
    for line in load(path).lines:
        if line.dir != "client" or not line.has_msg:
            continue
        for message in line.msg if isinstance(line.msg, list) else [line.msg]:
            if isinstance(message, dict) and message.get("method") == "secrets/set":
                assert message["params"]["value"] == "<redacted>", f"{path.name}: {message}"


def test_serve_args_drops_what_belongs_to_one_run() -> None:
    argv = ["python", "-m", "sidecar", "serve", "--data-dir", "/x", "--debug-methods", "--parent-pid=12",
            "--max-concurrency", "2"]
    assert serve_args(argv) == ["--debug-methods", "--max-concurrency", "2"]
    assert serve_args(["some-other-daemon", "--flag"]) == []


# ---- replay finds differences -------------------------------------------------------

def test_replay_reports_a_wrong_value_with_its_path(tmp_path: Path) -> None:
    def wrong(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for line in lines:
            if line.get("msg", {}).get("id") == "ping-3" and line["dir"] == "server":
                line["msg"]["result"]["pong"] = False
        return lines

    bad = edited(TRANSCRIPTS / "ping.jsonl", tmp_path / "bad.jsonl", wrong)
    report = replay(bad, timeout=TIMEOUT)
    assert not report.ok
    text = report.render()
    assert "$.result.pong" in text and "expected false, got true" in text
    lineno = next(i for i, line in enumerate(bad.read_text().splitlines(), 1) if '"pong":false' in line)
    assert f"bad.jsonl:{lineno}: response (id \"ping-3\") differs" in text
    assert len(report.differences) == 1


def test_replay_reports_missing_and_unexpected_messages(tmp_path: Path) -> None:
    def edit(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for line in lines:
            params = line.get("msg", {}).get("params") or {}
            if line["dir"] == "server" and params.get("seq") in (1, 2):
                continue  # the daemon will send them all the same
            out.append(line)
            if line["dir"] == "server" and params.get("seq") == 3:
                out.append({"dir": "server", "msg": {"jsonrpc": "2.0", "method": "system/streamChunk",
                                                     "params": {"data": "4.4.4.4.", "requestId": 2, "seq": 4}}})
                out.append({"dir": "server", "msg": {"jsonrpc": "2.0", "method": "system/neverSent"}})
        return out

    bad = edited(TRANSCRIPTS / "streaming.jsonl", tmp_path / "bad.jsonl", edit)
    report = replay(bad, timeout=2)  # the group waits this long for what never comes
    assert not report.ok
    text = report.render()
    # the expected seq 4 is paired with the first chunk nobody expected, and the diff shown
    assert "notification system/streamChunk differs" in text
    assert "$.params.data: differs: expected \"4.4.4.4.\", got \"1.1.1.1.\"" in text
    assert "$.params.seq: differs: expected 4, got 1" in text
    assert "missing notification system/neverSent (nothing within 2 s)" in text
    assert re.search(r"unexpected notification system/streamChunk \(arrived after line \d+\)\n.*\"seq\":2", text)
    assert len(report.differences) == 3


def test_replay_reports_a_different_exit_code(tmp_path: Path) -> None:
    def exit_code_1(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(line, exitCode=1) if "exitCode" in line else line for line in lines]

    report = replay(edited(TRANSCRIPTS / "lifecycle.jsonl", tmp_path / "bad.jsonl", exit_code_1), timeout=TIMEOUT)
    assert "expected exit code 1, got exit code 0" in report.render()


def test_replay_tolerates_reordered_late_and_optional_notifications(tmp_path: Path) -> None:
    def shuffle(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        chunks = [line for line in lines if line.get("msg", {}).get("method") == "system/streamChunk"]
        rest = [line for line in lines if line not in chunks]
        # the result first, then the chunks backwards, one of them only after the next request
        i = next(i for i, line in enumerate(rest) if line.get("msg", {}).get("id") == 2 and line["dir"] == "server")
        late = chunks.pop(0)
        rest[i + 1:i + 1] = list(reversed(chunks))
        j = next(i for i, line in enumerate(rest) if line.get("msg", {}).get("id") == 3 and line["dir"] == "server")
        rest.insert(j + 1, late)
        rest.insert(j + 1, {"dir": "server", "optional": True,
                            "msg": {"jsonrpc": "2.0", "method": "system/neverSent", "params": {}}})
        return rest

    report = replay(edited(TRANSCRIPTS / "streaming.jsonl", tmp_path / "shuffled.jsonl", shuffle), timeout=TIMEOUT)
    assert report.ok, report.render()


# ---- the format ---------------------------------------------------------------------

def test_loads_rejects_malformed_lines_naming_them() -> None:
    header = '{"transcript":1}'
    with pytest.raises(TranscriptError, match=r":2: a line needs exactly one of"):
        loads(header + '\n{"dir":"client"}\n')
    with pytest.raises(TranscriptError, match=r":2: unknown matcher 'numbr'"):
        loads(header + '\n{"dir":"server","msg":{},"match":{"$.x":"numbr"}}\n')
    with pytest.raises(TranscriptError, match=r":1: format version 9"):
        loads('{"transcript":9}\n')
    with pytest.raises(TranscriptError, match=r":3: not a transcript line"):
        loads(header + '\n{"dir":"client","close":true}\nnope\n')
    with pytest.raises(TranscriptError, match="only server lines can be optional"):
        loads(header + '\n{"dir":"client","msg":1,"optional":true}\n')


def test_dumps_and_loads_round_trip() -> None:
    text = (TRANSCRIPTS / "errors.jsonl").read_text()
    assert loads(text).dumps() == text


def test_loads_splits_on_newlines_only() -> None:
    """U+2028, U+2029 and U+0085 are line breaks to str.splitlines(), and msgspec writes
    them unescaped inside strings."""
    text_value = "a\u2028b\u2029c\u0085d\x1c\x1d\x1ee"
    transcript = Transcript(Header(1), [Line(dir="client", msg={"text": text_value}), Line(dir="client", close=True)])
    text = transcript.dumps()
    assert "\u2028" in text  # written as is, not escaped
    for variant in (text, text.replace("\n", "\r\n")):
        again = loads(variant)
        assert again.lines[0].msg == {"text": text_value}
        assert again.lines[1].close and again.linenos == [2, 3]


def test_raw_lines_keep_bytes_that_are_not_utf8() -> None:
    from sidecar.transcripts.format import raw_line

    line = raw_line("client", b"\xff\xfe oops\n")
    again = msgspec.json.decode(msgspec.json.encode(line), type=Line)
    assert again.raw_bytes() == b"\xff\xfe oops\n"


# ---- matching without a daemon ------------------------------------------------------

def test_matchers() -> None:
    got = {"a": 1.5, "b": 7, "c": "x", "t": "2026-01-02T03:04:05.6Z", "p": "/var/x", "w": "C:\\x",
           "r": "incident ab12", "s": [1, 2, 3], "l": [{"n": 1}, {"n": 2}], "f": True}
    expected = {"a": 0, "b": 0, "c": "", "t": "", "p": "", "w": "", "r": "", "s": [3, 1], "l": [{"n": 0}, {"n": 0}],
                "f": False, "gone": 1}
    matchers = {"$.a": "number", "$.b": "int", "$.c": "string", "$.t": "timestamp", "$.p": "path", "$.w": "path",
                "$.r": r"regex:^incident [0-9a-f]+$", "$.s": "superset", "$.l[*].n": "int", "$.f": "bool",
                "$.gone": "any"}
    assert compare(expected, got, matchers) == []
    wrong = {**got, "a": "1", "b": 1.5, "c": 3, "t": "yesterday", "p": "relative/x", "r": "incident XY",
             "s": [1, 2], "l": [{"n": 1}, {"n": "2"}], "f": 0}
    paths = {m.path for m in compare(expected, wrong, matchers)}
    assert paths == {"$.a", "$.b", "$.c", "$.t", "$.p", "$.r", "$.s", "$.l[1].n", "$.f"}


def test_compare_reports_paths_of_every_difference() -> None:
    expected = {"result": {"methods": [{"name": "a", "n": 1}], "ok": True, "gone": 1}, "id": 1}
    got = {"result": {"methods": [{"name": "a", "n": 2}, {"name": "b"}], "ok": 1, "extra": None}, "id": "1"}
    found = {(m.path, m.reason) for m in compare(expected, got)}
    assert found == {("$.result.methods", "array length differs"), ("$.result.methods[0].n", "differs"),
                     ("$.result.ok", "differs"), ("$.result.gone", "missing"),
                     ("$.result.extra", "not expected"), ("$.id", "differs")}
    assert compare({"n": 1}, {"n": 1.0}) == []  # numbers compare by value


def test_compare_batch_pairs_elements_in_any_order() -> None:
    expected = [{"id": 1, "result": True}, {"id": None, "error": {"code": -32600}}, {"id": 2, "result": False}]
    assert compare_batch(expected, list(reversed(expected))) == []
    got = [{"id": 2, "result": True}, {"id": None, "error": {"code": -32600}}, {"id": 1, "result": True}]
    assert [str(m) for m in compare_batch(expected, got)] == ["$[2].result: differs: expected false, got true"]
    assert compare_batch(expected, expected[:2])[0].reason == "batch size differs"


def test_default_matchers_pick_volatile_fields() -> None:
    info = {"jsonrpc": "2.0", "id": 3, "result": {
        "versions": {"sidecar": "0.1.0", "protocol": "2026-11-01", "python": "3.11.7"},
        "dataDir": "/tmp/d", "startedAt": "2026-11-22T00:26:01.570161Z", "uptimeSeconds": 0.02,
        "process": {"pid": 1, "parentPid": 2, "rssBytes": 3, "cpuPercent": 0.0, "threads": 1}}}
    assert default_matchers(info, "system/info") == {
        "$.result.versions.sidecar": "string", "$.result.versions.python": "string", "$.result.dataDir": "path",
        "$.result.startedAt": "timestamp", "$.result.uptimeSeconds": "number", "$.result.process.pid": "int",
        "$.result.process.parentPid": "int", "$.result.process.rssBytes": "int",
        "$.result.process.cpuPercent": "number", "$.result.process.threads": "int"}
    failed = {"jsonrpc": "2.0", "id": 9, "error": {"code": -32603, "message": "Internal error (incident b8181a)",
                                                   "data": {"kind": "internal", "incidentId": "b8181a"}}}
    matchers = default_matchers(failed)
    other = {**failed, "error": {**failed["error"], "message": "Internal error (incident 77ffee)",
                                 "data": {"kind": "internal", "incidentId": "77ffee"}}}
    assert compare(failed, other, matchers) == []
    assert compare(failed, {**other, "error": {**other["error"], "message": "Internal error"}}, matchers)
    # what a script determines stays exact
    assert default_matchers({"jsonrpc": "2.0", "id": 1, "result": {"count": 3, "sha256": "ab", "path": "$.x"}}) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)


@given(json_values)
def test_a_value_matches_itself(value: Any) -> None:
    assert compare(value, value) == []
    assert compare(value, msgspec.json.decode(msgspec.json.encode(value))) == []


def _nodes(value: Any, steps: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [steps]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _nodes(child, (*steps, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _nodes(child, (*steps, i))
    return found


def _replace(value: Any, steps: tuple[Any, ...], new: Any) -> Any:
    if not steps:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[steps[0]] = _replace(value[steps[0]], steps[1:], new)
    return copy


@given(json_values, st.data())
def test_compare_finds_a_changed_value_at_its_path(value: Any, data: st.DataObject) -> None:
    steps = data.draw(st.sampled_from(_nodes(value)))
    node = value
    for step in steps:
        node = node[step]
    changed = _replace(value, steps, {"changed": node})  # never equal to what was there
    found = compare(value, changed)
    assert found and all(m.path.startswith(format_path(list(steps))) for m in found)


@given(st.lists(st.integers(0, 99) | st.text(min_size=1, max_size=6), max_size=6))
def test_paths_format_and_parse_back(steps: list[Any]) -> None:
    assert list(parse_path(format_path(steps))) == steps


def test_path_syntax() -> None:
    assert re.fullmatch(r"\$\.result\[\"a b\"\]\[2\]", format_path(["result", "a b", 2]))
    assert parse_path(format_path(["a\n", "*", 0])) == ("a\n", "*", 0)  # a member named * is no wildcard
    with pytest.raises(ValueError):
        parse_path("result.x")
    with pytest.raises(ValueError):
        parse_path("$.a..b")

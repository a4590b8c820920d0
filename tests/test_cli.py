"""The command line: call, shell, record, replay and migrate, run as a user would run them."""

from __future__ import annotations

import io
import json
import queue
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import msgspec

from sidecar.client import DaemonClient
from tests.conftest import serve_argv

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def sidecar(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


# ---- call ---------------------------------------------------------------------------

def test_call_prints_the_result_pretty(data_dir: Path) -> None:
    proc = sidecar("call", "--data-dir", str(data_dir), "system/ping")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{\n  "pong": true\n}\n'


def test_call_with_params_and_notifications(data_dir: Path) -> None:
    proc = sidecar("call", "system/stream", '{"count": 2, "chunkBytes": 3}', "--notifications",
                   "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["count"] == 2
    chunks = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"jsonrpc"')]
    assert [c["params"]["seq"] for c in chunks] == [0, 1]


def test_call_error_exits_1_and_prints_the_error(data_dir: Path) -> None:
    proc = sidecar("call", "debug/sleep", '{"seconds": "soon"}', "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == -32602 and error["data"]["path"] == "$.params.seconds"

    proc = sidecar("call", "no/such", "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["data"] == {"kind": "method_not_found", "method": "no/such"}


def test_call_refuses_params_that_are_not_a_json_object() -> None:
    proc = sidecar("call", "system/ping", "{nope")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = sidecar("call", "system/ping", "[1]")
    assert proc.returncode == 2 and "must be a JSON object" in proc.stderr


def test_call_reports_a_daemon_that_exits_at_start() -> None:
    proc = sidecar("call", "system/ping", "--timeout", "30", "--daemon", sys.executable, "-c",
                   "import sys; sys.exit(3)")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"sidecar call: .*exit code 3.*\n", proc.stderr), proc.stderr


def test_call_reports_a_daemon_program_that_does_not_exist(tmp_path: Path) -> None:
    proc = sidecar("call", "system/ping", "--daemon", str(tmp_path / "no-such-daemon"))
    assert proc.returncode == 1
    assert re.fullmatch(r"sidecar call: .*no-such-daemon.*\n", proc.stderr), proc.stderr


# ---- serve --------------------------------------------------------------------------

def test_serve_is_the_default_command(data_dir: Path) -> None:
    """A serve option without the word `serve` still serves."""
    client = DaemonClient([sys.executable, "-m", "sidecar", "--data-dir", str(data_dir),
                           "--secrets-backend", "file"])
    try:
        assert client.initialize("pytest")["serverInfo"]["name"] == "sidecar"
        assert client.request("system/info")["dataDir"] == str(data_dir)
        assert client.shutdown() == 0
    finally:
        client.close()


def test_default_command_leaves_help_and_version_alone() -> None:
    from sidecar.cli.main import with_default_command

    assert with_default_command([]) == ["serve"]
    assert with_default_command(["--data-dir", "x"]) == ["serve", "--data-dir", "x"]
    assert with_default_command(["call", "system/ping"]) == ["call", "system/ping"]
    for word in ("-h", "--help", "--version"):
        assert with_default_command([word]) == [word]
    proc = sidecar("--help")
    assert proc.returncode == 0 and "COMMAND" in proc.stdout


# ---- shell --------------------------------------------------------------------------

def test_shell_runs_piped_lines_and_prints_notifications(data_dir: Path) -> None:
    script = "\n".join([
        "# a comment, then a blank line",
        "",
        "system/ping",
        'system/stream {"count": 3, "chunkBytes": 4}',
        "no/such",
        'settings/set {"key": "log.level", "value": "warning"}',
        "system/ping {oops",
        ":notify initialized",
        ":bogus",
        "",
    ])
    proc = sidecar("shell", "--daemon", *serve_argv(data_dir), stdin=script)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith('{\n  "pong": true\n}\n')
    chunks = re.findall(r"^<- system/streamChunk (\{.*\})$", out, re.MULTILINE)
    assert [json.loads(c)["seq"] for c in chunks] == [0, 1, 2]
    # the chunks are printed as they arrive, before the final result
    assert out.index("<- system/streamChunk") < out.index('"sha256"')
    assert '"code": -32601' in out
    assert re.search(r'^<- settings/changed \{"key":"log.level","value":"warning","previous":"info"\}$', out,
                     re.MULTILINE)
    assert "params are not valid JSON" in out
    assert "unknown command :bogus" in out
    assert re.search(r"sidecar \S+ \(protocol .*\): \d+ methods", proc.stderr)


def test_shell_help_methods_and_quit(data_dir: Path) -> None:
    proc = sidecar("shell", "--daemon", *serve_argv(data_dir), stdin=":help\n:methods\n:quit\nsystem/ping\n")
    assert proc.returncode == 0, proc.stderr
    assert ":notify METHOD [JSON]" in proc.stdout
    assert "  system/ping\n" in proc.stdout and "  system/streamChunk\n" in proc.stdout
    assert '"pong"' not in proc.stdout  # nothing after :quit runs


def test_shell_completes_method_names() -> None:
    from sidecar.cli.shell import Shell

    shell = Shell(sys.stdout, interactive=False, timeout=1)
    shell.methods = ["system/ping", "system/stream", "settings/get"]
    completions = []
    state = 0
    while (option := shell.complete("system/", state)) is not None:
        completions.append(option)
        state += 1
    assert completions == ["system/ping", "system/stream"]
    assert shell.complete(":q", 0) == ":quit"


class _InterruptedOnce:
    """A waiter whose first get() is a Ctrl-C that lands once the answer is already routed to it."""

    def __init__(self, waiter: queue.Queue[Any]) -> None:
        self.waiter = waiter
        self.interrupted = False

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not self.interrupted:
            self.interrupted = True
            deadline = time.monotonic() + 20
            while self.waiter.empty() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise KeyboardInterrupt
        return self.waiter.get(block, timeout)


def test_shell_still_gets_an_answer_that_arrives_around_ctrl_c(data_dir: Path) -> None:
    from sidecar.cli.shell import Shell

    out = io.StringIO()
    shell = Shell(out, interactive=False, timeout=20)
    client = DaemonClient(serve_argv(data_dir))
    shell.client = client
    real_expect = client.expect
    wrapped: list[_InterruptedOnce] = []

    def expect(request_id: Any) -> Any:  # only the request's first waiter is interrupted
        waiter = real_expect(request_id)
        if wrapped:
            return waiter
        wrapped.append(_InterruptedOnce(waiter))
        return wrapped[0]

    try:
        client.initialize("pytest")
        client.expect = expect  # type: ignore[method-assign]
        shell.request("system/ping", None)
    finally:
        client.close()
    assert "cancelling request 1" in out.getvalue()
    assert out.getvalue().endswith('{\n  "pong": true\n}\n'), out.getvalue()


# ---- record and replay --------------------------------------------------------------

def test_replay_cli_exit_codes(tmp_path: Path) -> None:
    proc = sidecar("replay", str(TRANSCRIPTS / "ping.jsonl"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ping.jsonl: ok" in proc.stdout

    header, *lines = (TRANSCRIPTS / "ping.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([header, *(line.replace('"pong":true', '"pong":"yes"') for line in lines)]) + "\n")
    proc = sidecar("replay", str(bad))
    assert proc.returncode == 1
    assert '$.result.pong: differs: expected "yes", got true' in proc.stdout

    bad.write_text("not a transcript\n")
    proc = sidecar("replay", str(bad))
    assert proc.returncode == 2 and "not a transcript header" in proc.stderr


def test_record_cli_then_replay_cli(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "t.jsonl"
    stdin = "\n".join([
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
        '{"jsonrpc":"2.0","method":"initialized"}',
        '{"jsonrpc":"2.0","id":2,"method":"system/health"}',
        "",
    ])
    proc = sidecar("record", "--out", str(out), "--", *serve_argv(data_dir), stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert [msgspec.json.decode(line)["id"] for line in proc.stdout.splitlines()] == [1, 2]
    proc = sidecar("replay", str(out))
    assert proc.returncode == 0, proc.stdout


def test_record_keeps_the_client_framing(tmp_path: Path, data_dir: Path) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-m", "sidecar", "record", "--out", str(out), "--",
                           *serve_argv(data_dir)],
                          input=b"Content-Length: %d\r\n\r\n%s" % (len(body), body), capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"Content-Length: ")
    assert json.loads(out.read_text().splitlines()[0])["framing"] == "content-length"


# ---- migrate ------------------------------------------------------------------------

def test_migrate_reports_a_file_that_is_not_a_database(data_dir: Path) -> None:
    (data_dir / "sidecar.db").write_bytes(b"this is not a database, " * 100)
    for args in ((), ("--status",)):
        proc = sidecar("migrate", "--data-dir", str(data_dir), *args)
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert re.fullmatch(r"sidecar migrate: .*\n", proc.stderr), proc.stderr


def test_migrate_errors_go_to_stderr(data_dir: Path) -> None:
    conn = apsw.Connection(str(data_dir / "sidecar.db"))
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = sidecar("migrate", "--data-dir", str(data_dir))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("sidecar migrate: ") and "newer than this sidecar knows" in proc.stderr


def test_migrate_status_after_the_daemon_ran(data_dir: Path) -> None:
    """The daemon migrates on start; status then has nothing pending."""
    assert sidecar("call", "system/ping", "--daemon", *serve_argv(data_dir)).returncode == 0
    proc = sidecar("migrate", "--status", "--data-dir", str(data_dir))
    assert proc.returncode == 0 and "pending: none" in proc.stdout

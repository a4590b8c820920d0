"""The command line: call, shell, describe, record, replay and migrate, run as a user would run them."""

from __future__ import annotations

import io
import json
import queue
import re
import signal
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


def test_call_refuses_params_that_are_not_json_or_not_structured() -> None:
    proc = sidecar("call", "system/ping", "{nope")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    proc = sidecar("call", "system/ping", "3")
    assert proc.returncode == 2 and "must be a JSON object or array" in proc.stderr


def test_array_params_are_forwarded_by_call_and_shell_alike(data_dir: Path) -> None:
    """One rule: an array goes to the daemon, which answers -32602 with the path."""
    proc = sidecar("call", "system/stream", "[1]", "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == -32602 and error["data"]["path"] == "$.params"
    proc = sidecar("shell", "--daemon", *serve_argv(data_dir), stdin="system/stream [1]\nsystem/ping 3\n")
    assert proc.returncode == 0, proc.stderr
    assert '"code": -32602' in proc.stdout and '"path": "$.params"' in proc.stdout
    assert "params must be a JSON object or array" in proc.stdout  # the scalar, refused as by call


def test_call_is_quiet_by_default_and_verbose_on_request(data_dir: Path) -> None:
    """The daemon logs INFO lines on every start; call shows them only when asked."""
    proc = sidecar("call", "system/ping", "--data-dir", str(data_dir))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for flags in (["-v"], ["--log-level", "info"]):
        proc = sidecar("call", "system/ping", "--data-dir", str(data_dir), *flags)
        assert proc.returncode == 0
        assert re.search(r"^\S+ \S+ INFO sidecar\S* \[\d+\]: ", proc.stderr, re.MULTILINE), proc.stderr
    proc = sidecar("call", "system/ping", "--data-dir", str(data_dir), "-vv")
    assert " DEBUG " in proc.stderr or " INFO " in proc.stderr  # debug asks the daemon for more


def test_ctrl_c_during_call_cancels_and_exits_130_quietly(data_dir: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "call", "system/stream",
                             '{"count": 5, "intervalMs": 60000}', "--notifications",
                             "--daemon", *serve_argv(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # no chunk comes for 60 s, and call hides the daemon's start-up log: wait for the
        # daemon process, then give it time to start and take the request
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _daemon_child_running(proc.pid):
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = proc.communicate(timeout=30)
        # the 60 s request was cancelled, not waited for
        assert time.monotonic() - interrupted < 20
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert out == ""


def _daemon_child_running(pid: int) -> bool:
    import psutil

    try:
        return any("serve" in child.cmdline() for child in psutil.Process(pid).children())
    except psutil.Error:
        return False


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


# ---- errors a person sees: one line, no traceback ---------------------------------------

def test_serve_with_an_unusable_data_dir_says_so_in_one_line(tmp_path: Path) -> None:
    proc = sidecar("serve", "--data-dir", "/proc/nope", stdin="")
    assert proc.returncode == 2
    assert proc.stderr == ("sidecar: cannot use the data directory /proc/nope: "
                           "[Errno 2] No such file or directory\n")
    a_file = tmp_path / "file"
    a_file.write_text("")
    proc = sidecar("serve", "--data-dir", str(a_file), stdin="")
    assert proc.returncode == 2
    assert proc.stderr == f"sidecar: cannot use the data directory {a_file}: [Errno 20] Not a directory\n"


def test_shell_and_call_relay_why_the_daemon_did_not_start() -> None:
    reason = "sidecar: cannot use the data directory /proc/nope: [Errno 2] No such file or directory"
    for command in ("shell", "call"):
        args = [command, "--data-dir", "/proc/nope"] + (["system/ping"] if command == "call" else [])
        proc = sidecar(*args, stdin="system/ping\n")
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].endswith(f"(exit code 2): {reason}"), proc.stderr


def test_record_a_daemon_that_does_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    proc = sidecar("record", "--out", str(out), "--", str(tmp_path / "no-such-daemon"), stdin="")
    assert proc.returncode == 2
    assert re.fullmatch(r"sidecar record: cannot start the daemon '.*no-such-daemon': .*\n", proc.stderr), proc.stderr
    assert not out.exists()


def test_record_a_transcript_that_cannot_be_written(tmp_path: Path, data_dir: Path) -> None:
    proc = sidecar("record", "--out", "/proc/z.jsonl", "--", *serve_argv(data_dir), stdin="")
    assert proc.returncode == 2
    assert proc.stderr == ("sidecar record: cannot write the transcript '/proc/z.jsonl': "
                           "[Errno 2] No such file or directory\n")
    missing = tmp_path / "no-such-dir"
    proc = sidecar("record", "--out", str(missing / "z.jsonl"), "--", *serve_argv(data_dir), stdin="")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("sidecar record: cannot write the transcript ")
    assert not missing.exists()  # no directory made that was not asked for


def test_record_does_not_truncate_a_transcript_when_the_daemon_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    out.write_text("precious\n")
    proc = sidecar("record", "--out", str(out), "--", str(tmp_path / "nope"), stdin="")
    assert proc.returncode == 2 and out.read_text() == "precious\n"


def test_shell_notices_the_daemon_exit_at_once(data_dir: Path) -> None:
    """After shutdown and exit the shell says so without waiting for another line, and ends 0."""
    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "shell", "--daemon", *serve_argv(data_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write("shutdown\nexit\n")
        proc.stdin.flush()  # stdin stays open: nothing more comes, no end of input either
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "exited" in line or not line:
                break
        assert seen[-1] == "sidecar shell: the daemon exited cleanly (code 0)\n", seen
        assert proc.wait(timeout=30) == 0  # and it ends on its own
        assert proc.stdout is not None and proc.stdout.read() == "null\n"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_shell_notices_a_daemon_that_dies_while_it_waits_for_a_line(data_dir: Path) -> None:
    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "sidecar", "shell", "--daemon", *serve_argv(data_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write("system/ping\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "{\n"  # the session is up; stdin stays open
        [daemon] = psutil.Process(proc.pid).children()
        daemon.kill()
        killed = time.monotonic()
        assert proc.wait(timeout=30) == 1  # without another line or end of input
        assert time.monotonic() - killed < 10
        lines = proc.stderr.read().splitlines()
        assert lines[-1] == "sidecar shell: the daemon exited (killed by SIGKILL)", lines
    finally:
        if proc.poll() is None:
            proc.kill()


def test_shell_reports_an_exit_without_shutdown_with_its_code(data_dir: Path) -> None:
    proc = sidecar("shell", "--daemon", *serve_argv(data_dir), stdin="exit\nsystem/ping\n")
    assert proc.returncode == 1
    assert re.search(r"^sidecar shell: the daemon exited \(code 1\)", proc.stderr, re.MULTILINE), proc.stderr
    assert "Errno 32" not in proc.stderr and '"pong"' not in proc.stdout


# ---- describe -----------------------------------------------------------------------

def test_describe_prints_params_with_defaults_and_descriptions() -> None:
    proc = sidecar("describe", "system/stream")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^  intervalMs: number 0\.\.3600000, optional, default 0\.0 — Milliseconds to wait",
                     proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"^  chunkBytes: integer 0\.\.1048576, optional, default 16 — ", proc.stdout, re.MULTILINE)
    assert "result: StreamResult" in proc.stdout and "streams system/streamChunk" in proc.stdout
    document = json.loads(sidecar("describe", "system/stream", "--json").stdout)
    assert {f["name"]: f["default"] for f in document["params"]} == {"count": 10, "chunkBytes": 16,
                                                                       "intervalMs": 0.0}


def test_describe_matches_the_generated_schema() -> None:
    """describe and protocol/schema/openrpc.json read the same Structs: they agree."""
    from protocol.describe import describe

    openrpc = json.loads((Path(__file__).parents[1] / "protocol/schema/openrpc.json").read_text())
    for method in openrpc["methods"]:
        described = describe(method["name"])
        assert [p["name"] for p in method["params"]] == [f.name for f in described.params], method["name"]
        for param, field in zip(method["params"], described.params):
            assert param["required"] == field.required
            if "default" in param["schema"]:
                assert param["schema"]["default"] == field.default
            assert param["schema"].get("description") == field.description


def test_describe_an_unknown_method_suggests_close_ones() -> None:
    proc = sidecar("describe", "system/pnig")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("sidecar describe: no method 'system/pnig'; did you mean system/ping")
    proc = sidecar("describe")
    assert proc.returncode == 0 and re.search(r"^system/stream +Stream test chunks", proc.stdout, re.MULTILINE)


def test_system_describe_method(data_dir: Path) -> None:
    proc = sidecar("call", "system/describe", '{"method": "system/stream"}', "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [f["name"] for f in result["params"]] == ["count", "chunkBytes", "intervalMs"]
    assert result["resultType"] == "StreamResult"
    proc = sidecar("call", "system/describe", '{"method": "system/pnig"}', "--daemon", *serve_argv(data_dir))
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error["data"]["kind"] == "not_found" and "system/ping" in error["message"]


def test_shell_describe_and_param_completion(monkeypatch: Any, data_dir: Path) -> None:
    from sidecar.cli import shell as shell_module

    proc = sidecar("shell", "--daemon", *serve_argv(data_dir), stdin=":describe system/stream\n:describe x/y\n")
    assert proc.returncode == 0, proc.stderr
    assert "  intervalMs: number" in proc.stdout and "no method 'x/y'" in proc.stdout

    shell = shell_module.Shell(sys.stdout, interactive=False, timeout=1)
    shell.methods = ["system/ping", "system/stream"]

    def completions(buffer: str) -> list[str]:
        monkeypatch.setattr(shell_module, "_line_buffer", lambda: buffer)
        text = buffer.split(" ")[-1]
        found, state = [], 0
        while (option := shell.complete(text, state)) is not None:
            found.append(option)
            state += 1
        return found

    assert completions('system/stream {"co') == ['{"count": ']
    assert completions('system/stream {"count":3,"') == ['{"count":3,"count": ', '{"count":3,"chunkBytes": ',
                                                         '{"count":3,"intervalMs": ']
    assert completions("system/stream ") == ['{"count": ', '{"chunkBytes": ', '{"intervalMs": ']
    assert completions(":describe system/st") == ["system/stream"]
    assert completions("no/such {") == []


# ---- help ---------------------------------------------------------------------------

def test_every_option_has_help_and_shows_its_default() -> None:
    import argparse

    from sidecar.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.dest} has no help"
            if action.default not in (None, False, 0) or isinstance(action.default, float):
                assert "default" in action.help, f"{name} {action.dest}: help does not show its default"
    for command in ("call", "shell", "replay"):
        assert re.search(r"--timeout TIMEOUT\s+seconds .*\(default \d+", sidecar(command, "--help").stdout)

"""`sidecar shell`: an interactive session with a spawned daemon.

Lines are `METHOD [JSON params]`, or a command: `:help`, `:methods`, `:describe METHOD`,
`:notify METHOD [JSON]`, `:quit`. Results print as indented JSON; notifications print as they
arrive, from the client's reader thread, as `<- METHOD {params}`. A client notification
typed as a method (`exit`, `initialized`, `$/cancelRequest {"id": 3}`) is sent as one. Ctrl-C
while waiting cancels the request with `$/cancelRequest`; end of input (Ctrl-D) or `:quit`
shuts the daemon down. When the daemon exits (after `shutdown` and `exit`, or on its own)
the shell says so at once, with its exit code, and ends. It reads a pipe as well as a
terminal (no prompt then), so scripts and tests can drive it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import IO, Any

from protocol import catalog, describe
from sidecar.cli.call import daemon_command
from sidecar.cli.common import ParamsError, parse_params
from sidecar.client import DaemonClient, exit_text, request_message

PROMPT = "sidecar> "
#: seconds to wait for a cancelled request's answer
CANCEL_WAIT = 10.0
#: seconds to wait for the daemon to go after an `exit` notification
EXIT_WAIT = 5.0
COMMANDS = (":help", ":methods", ":describe", ":notify", ":quit")
#: notifications a client sends: typed as a method, they go out as notifications
CLIENT_NOTIFICATIONS = frozenset(n.name for n in catalog.NOTIFICATIONS if n.direction == "client")
HELP = """\
  METHOD [JSON]          call a method, e.g.  system/stream {"count": 3, "intervalMs": 500}
  :describe METHOD       its params (types, defaults) and result; Tab completes param names
  :notify METHOD [JSON]  send a notification, e.g.  :notify $/cancelRequest {"id": 3}
                         (exit, initialized and $/cancelRequest go as notifications anyway)
  :methods               list the methods and notifications the daemon offers
  :help                  this text
  :quit                  shut the daemon down and leave (so does end of input)
  Ctrl-C while waiting cancels the request."""


class Shell:
    def __init__(self, out: IO[str], interactive: bool, timeout: float) -> None:
        self.out = out
        self.interactive = interactive
        self.timeout = timeout
        self.methods: list[str] = []
        self.notifications: list[str] = []
        self.client: DaemonClient | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one writer at a time: the prompt loop or the reader thread
        self._at_prompt = False
        #: set (from the client's reader thread) once the daemon has exited; its code
        self.exited = threading.Event()
        self.exit_code: int | None = None
        #: the session is up: before it, a failed start is reported once, by run()
        self.started = False

    # ---- output ---------------------------------------------------------------

    def emit(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def on_notification(self, message: dict[str, Any]) -> None:
        params = json.dumps(message.get("params"), ensure_ascii=False, separators=(",", ":"))
        text = f"<- {message.get('method')} {params}"
        if not (self.interactive and self._at_prompt):
            self.emit(text)
            return
        # the user is typing: print above the prompt line and put it back as it was
        with self._lock:
            self.out.write(f"\r\x1b[K{text}\n{PROMPT}{_line_buffer()}")
            self.out.flush()

    def on_exit(self, code: int) -> None:
        """The daemon is gone: say so now, not at the next command."""
        self.exit_code = code
        if not self.started:
            self.exited.set()
            return
        if code == 0:
            text = "sidecar shell: the daemon exited cleanly (code 0)"
        else:
            words = self.client.last_words() if self.client is not None else ""
            how = f"code {code}" if code >= 0 else exit_text(code)
            text = f"sidecar shell: the daemon exited ({how})" + (f": {words}" if words else "")
        at_prompt = self._at_prompt
        with self._lock:
            sys.stderr.write(("\r\x1b[K" if at_prompt and self.interactive else "") + text + "\n")
            sys.stderr.flush()
        self.exited.set()
        if at_prompt and os.name == "posix":
            # wake the loop from its wait for a line: it sees the exit and ends
            os.kill(os.getpid(), signal.SIGINT)

    # ---- commands -------------------------------------------------------------

    def execute(self, line: str) -> bool:
        """Run one input line; False when the session should end."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        word, _, rest = line.partition(" ")
        if word in (":quit", ":exit", ":q"):
            return False
        if word == ":help":
            self.emit(HELP)
        elif word == ":methods":
            self.emit("methods:\n" + "\n".join(f"  {m}" for m in self.methods)
                      + "\nnotifications:\n" + "\n".join(f"  {n}" for n in self.notifications))
        elif word == ":describe":
            self.describe(rest.strip())
        elif word == ":notify":
            method, _, text = rest.strip().partition(" ")
            params = self._params(text)
            if method and params is not _INVALID:
                self._client().notify(method, params)
            elif not method:
                self.emit("usage: :notify METHOD [JSON]")
        elif word.startswith(":"):
            self.emit(f"unknown command {word}; :help lists them")
        elif word in CLIENT_NOTIFICATIONS:
            params = self._params(rest)
            if params is not _INVALID:
                self._client().notify(word, params)
        else:
            params = self._params(rest)
            if params is not _INVALID:
                self.request(word, params)
        return True

    def describe(self, method: str) -> None:
        if not method:
            self.emit("usage: :describe METHOD")
            return
        try:
            self.emit(describe.render(describe.describe(method)))
        except describe.UnknownMethod as exc:
            self.emit(str(exc))

    def request(self, method: str, params: Any) -> None:
        client = self._client()
        request_id = next(self._ids)
        # one waiter for the whole request, Ctrl-C included: an answer that arrives while
        # the cancel goes out must find it still registered
        waiter = client.expect(request_id)
        try:
            client.send(request_message(request_id, method, params))
            response = self._await(request_id, waiter)
        except (TimeoutError, ConnectionError) as exc:
            self.emit(f"error: {exc}")
            return
        finally:
            client.forget(request_id)
        if response is None:
            return
        if "error" in response:
            self.emit("error " + json.dumps(response["error"], indent=2, ensure_ascii=False))
        else:
            self.emit(json.dumps(response.get("result"), indent=2, ensure_ascii=False))

    def _await(self, request_id: int, waiter: queue.Queue[dict[str, Any]]) -> dict[str, Any] | None:
        """The response; the first Ctrl-C cancels the request and waits a little for its answer
        (-32800, or the result if it was already on its way), a second one stops waiting."""
        client = self._client()
        timeout = self.timeout
        cancelled = False
        while True:
            try:
                return client.receive(request_id, waiter, timeout)
            except KeyboardInterrupt:
                if cancelled:
                    self.emit(f"stopped waiting for request {request_id}")
                    return None
                cancelled, timeout = True, CANCEL_WAIT
                client.notify("$/cancelRequest", {"id": request_id})
                self.emit(f"cancelling request {request_id}")

    def _params(self, text: str) -> Any:
        try:
            return parse_params(text)  # the same rule as `sidecar call`
        except ParamsError as exc:
            self.emit(str(exc))
            return _INVALID

    def _client(self) -> DaemonClient:
        assert self.client is not None
        return self.client

    # ---- completion -------------------------------------------------------------

    def complete(self, text: str, state: int) -> str | None:
        buffer = _line_buffer().lstrip()
        if buffer.startswith(":notify "):
            options = [n for n in self.notifications if n.startswith(text)]
        elif buffer.startswith(":describe "):
            options = [n for n in self.methods if n.startswith(text)]
        elif " " in buffer:
            method, _, params = buffer.partition(" ")
            options = _param_options(method, params, text)
        else:
            options = [n for n in [*self.methods, *COMMANDS] if n.startswith(text)]
        return options[state] if state < len(options) else None


def _param_options(method: str, params: str, text: str) -> list[str]:
    """Completions of a param name in the JSON being typed: `{"co` -> `{"count": `."""
    cut = max(text.rfind("{"), text.rfind(","))
    prefix, fragment = text[:cut + 1], text[cut + 1:]
    if not fragment.startswith('"') and fragment:
        return []
    fragment = fragment.lstrip('"')
    if cut < 0 and "{" not in params:
        prefix = "{"  # nothing typed yet: open the object too
    return [f'{prefix}"{name}": ' for name in describe.param_names(method) if name.startswith(fragment)]


class _Invalid:
    pass


_INVALID: Any = _Invalid()


def _line_buffer() -> str:
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        return ""
    return readline.get_line_buffer()


def _setup_readline(shell: Shell) -> None:
    try:
        import readline
    except ImportError:
        return
    readline.set_completer(shell.complete)
    # method names contain '/' and '$': only whitespace separates words
    readline.set_completer_delims(" \t\n")
    readline.parse_and_bind("tab: complete")


def run(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    shell = Shell(sys.stdout, interactive, args.timeout)
    argv = daemon_command(args)
    try:
        # stderr piped, not shown: its last line says why, should the daemon die
        client = DaemonClient(argv, stderr=subprocess.PIPE, on_notification=shell.on_notification,
                              on_exit=shell.on_exit, new_session=interactive)
    except OSError as exc:  # no such program, not executable, ...
        print(f"sidecar shell: cannot start the daemon {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    shell.client = client
    try:
        info = client.initialize("sidecar-shell")
    except Exception as exc:  # noqa: BLE001 - the daemon did not start; say why and leave
        print(f"sidecar shell: the daemon did not initialize: {exc}", file=sys.stderr)
        client.close()
        return 1
    shell.started = True
    shell.methods = list(info.get("methods", []))
    shell.notifications = list(info.get("notifications", []))
    server = info.get("serverInfo", {})
    print(f"{server.get('name', 'sidecar')} {server.get('version', '?')} "
          f"(protocol {info.get('protocolVersion')}): {len(shell.methods)} methods. "
          f":help for help, Ctrl-D to quit.", file=sys.stderr)
    if interactive:
        _setup_readline(shell)
    code = 0
    try:
        while True:
            if client.proc.poll() is not None:
                shell.exited.wait(2.0)  # its reader thread says so, once
                return 0 if client.proc.returncode == 0 else 1
            try:
                shell._at_prompt = True  # a daemon exit now interrupts the wait for a line
                try:
                    line = input(PROMPT) if interactive else sys.stdin.readline()
                finally:
                    shell._at_prompt = False
                if not line and not interactive:
                    break
            except EOFError:
                break
            except KeyboardInterrupt:
                if not shell.exited.is_set():
                    shell.emit("")  # a fresh prompt, as shells do
                continue
            try:
                if not shell.execute(line):
                    break
            except OSError as exc:  # the pipe to the daemon broke
                if shell.exited.wait(2.0):
                    return 0 if shell.exit_code == 0 else 1  # and it has said so
                print(f"sidecar shell: lost the daemon: {exc}", file=sys.stderr)
                return 1
            words = line.split()
            if words[:1] == ["exit"] or words[:2] == [":notify", "exit"]:
                shell.exited.wait(EXIT_WAIT)  # it is going: say so before reading more
    finally:
        if client.proc.poll() is None:
            try:
                code = client.shutdown(timeout=5)
            except Exception:  # noqa: BLE001 - it may be gone by now; make sure it is
                client.close()
    return 0 if code == 0 else 1

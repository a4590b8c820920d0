"""Every method of the catalog, every kind of bad params: a typed error, and the daemon lives.

For each method in `protocol.catalog.METHODS` (but the lifecycle ones and the debug methods
that fail on purpose), hypothesis generates params from the method's Struct in three
families (tests/support/params_strategies.py): wrong JSON types / missing / unknown fields,
hostile contents of the right types, and valid-looking values. All go to ONE long-lived
daemon subprocess for the module, seeded with real things (a project, a workflow and a run,
a job, a plugin, a provider on a closed 127.0.0.1 port, ...) so ids sometimes exist.

Each answer must be a result, or an error with `data.kind` whose code is not -32603
(internal); it must come within `ANSWER_BOUND` seconds (a hang is a bug); afterwards
`system/ping` must answer and stdout must have carried nothing but protocol. A wrongly typed
or missing field must answer -32602 with the path of the field.

No network: the daemon's HTTP goes through a proxy on a closed 127.0.0.1 port, providers
point at one, and commands it could start (MCP servers, debug/spawn) are paths that cannot run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.catalog import METHODS
from protocol.spec import MethodSpec
from sidecar.client import DaemonClient
from tests.conftest import REPO, serve_argv
from tests.support import params_strategies as ps

#: every request must be answered within this many seconds
ANSWER_BOUND = 10.0
#: nothing listens here (the discard port; tests never bind it)
CLOSED = "http://127.0.0.1:9"

#: `exit` is a notification, not in METHODS; the debug ones fail on purpose (-32603)
SKIP = {"initialize", "shutdown", "debug/fail", "debug/failAsync"}
FUZZED: list[MethodSpec] = [m for m in METHODS if m.name not in SKIP and not m.name.startswith("$/")]

#: settings whose change would slow or stall every later request (server limits, retries
#: and timeouts, a team database): legal, so not fuzzed here
UNSAFE_SETTINGS = re.compile(r"^(server\.|team\.|llm\.(retry|max|connect|read|tool|checkpoint)|plugins\.(default|max|watch)"
                             r"|scheduler\.|voice\.threads)")

_UNRUNNABLE = ["/nonexistent/sidecar-fuzz-cmd", "/etc/passwd", "../../etc/passwd", "/proc/self/mem", "/dev/null",
               "/", "\x00", "x" * 5000, "é\u202e"]


# ---- inputs left out of the fuzz: none today. (The last ones, a bad providers/detect
# baseUrl, non-ASCII provider keys and headers, NUL in search queries, were bugs and are fixed,
# with regression tests beside their modules.)
FILTERS: ps.Filters = {}


def _workflow_docs(run_dir: Path) -> list[Any]:
    """Workflow documents that are valid or nearly so, with hostile steps (bounded in time)."""
    set_step = {"id": "s", "kind": "set", "inputs": {"value": "{{inputs.x}}"}}
    return [
        {"id": "fz-ok", "name": "ok", "inputs": {"x": {"type": "any"}}, "steps": [set_step]},
        {"id": "fz-delay", "steps": [{"id": "d", "kind": "delay", "inputs": {"ms": 5}}]},
        {"id": "fz-file", "steps": [{"id": "f", "kind": "file", "inputs": {"path": "../../etc/passwd"}}]},
        {"id": "fz-abs", "steps": [{"id": "f", "kind": "file", "inputs": {"path": "/proc/self/mem"}}]},
        {"id": "fz-write", "steps": [{"id": "f", "kind": "file",
                                      "inputs": {"path": str(run_dir / "w.txt"), "op": "write", "content": "x"}}]},
        {"id": "fz-http", "steps": [{"id": "h", "kind": "http", "inputs": {"url": CLOSED + "/x", "timeoutMs": 500}}]},
        {"id": "fz-loop", "inputs": {"x": {"type": "any"}}, "steps": [{"id": "l", "kind": "loop", "inputs": {"items": list(range(200))},
                                     "body": {"steps": [set_step]}}]},
        {"id": "fz-self", "steps": [{"id": "w", "kind": "workflow", "inputs": {"workflow": "fz-self"}}]},
        {"id": "fz-cycle", "steps": [{"id": "a", "kind": "set", "inputs": {"value": 1}, "needs": ["b"]},
                                     {"id": "b", "kind": "set", "inputs": {"value": 1}, "needs": ["a"]}]},
        {"id": "fz-expr", "steps": [{"id": "c", "kind": "condition", "inputs": {"expr": "1 / 0 == (" * 50}}]},
        {"id": "fz-tool", "steps": [{"id": "t", "kind": "tool", "inputs": {"tool": "plugin__case",
                                                                          "arguments": {"text": "\x00" * 100}}}]},
        {"id": "fz-llm", "steps": [{"id": "m", "kind": "llm", "inputs": {"prompt": "hi", "provider": "fuzzp"}}]},
        "id: fz-yaml\nsteps:\n  - id: s\n    kind: set\n    inputs: {value: 1}\n",
    ]


#: YAML that expands exponentially when its aliases are followed ("billion laughs")
YAML_BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
HOSTILE_DOCS: list[Any] = [YAML_BOMB, "id: fz-bomb\nsteps: []\nx:\n" + "".join("  " + line + "\n" for line in YAML_BOMB.splitlines())
                           + "outputs: {o: *i}\n", "a: [", "!!python/object/apply:os.system ['id']", "- 1\n- 2", "{}", "",
                           "\x00", "id: x\nsteps: " + "[" * 900 + "]" * 900]


def _overrides(pool: ps.Pool, run_dir: Path) -> ps.Overrides:
    docs = _workflow_docs(run_dir)

    def pick(valid: list[Any], hostile: list[Any]) -> Any:
        return lambda family: st.sampled_from(valid if family == "valid" else hostile + valid)

    settings_keys = [k for k in pool.for_field("settings/list", "key") if not UNSAFE_SETTINGS.match(k)]
    block_inputs = {"set": {"value": [1, {"a": "{{x}}"}]}, "delay": {"ms": 3}, "http": {"url": CLOSED, "timeoutMs": 300},
                    "file": {"path": "../../etc/passwd"}, "condition": {"expr": "1 == 1"},
                    "loop": {"items": [1, 2]}, "workflow": {"workflow": "fz-ok"},
                    "tool": {"tool": "plugin__case", "arguments": {"text": "a", "to": "upper"}},
                    "llm": {"prompt": "hi", "provider": "fuzzp"}}
    return {
        ("system/stream", "count"): pick([0, 1, 3], [-1, 10_000_001, 2**63, 2**64]),
        ("system/stream", "chunkBytes"): pick([0, 1, 64], [-1, 1_048_577, 2**63]),
        ("system/stream", "intervalMs"): pick([0, 0.5, -0.0], [-1.0, 3_600_001.0, 1e308]),
        ("debug/sleep", "seconds"): pick([0, 0.001, -0.0], [-1, 3601, 1e308, 2**63, -1e-300]),
        ("debug/spawn", "argv"): pick([[sys.executable, "-c", "pass"]],
                                      [[p] for p in _UNRUNNABLE] + [[], ["/etc/passwd", "\x00"]]),
        ("mcp/servers/add", "command"): pick(["/nonexistent/sidecar-fuzz-mcp"], _UNRUNNABLE),
        ("*", "baseUrl"): pick([CLOSED, CLOSED + "/v1", None],
                               ["", "x" * 3000, "file:///etc/passwd", "ftp://127.0.0.1:9", "http://",
                                "http://127.0.0.1:99999", "javascript:alert(1)", "/etc/passwd", "http://[::1",
                                "http://127.0.0.1:9/\x00"]),
        ("settings/set", "key"): pick(settings_keys, [*ps.HOSTILE_STRINGS, "no.such.key"]),
        ("settings/reset", "key"): pick(settings_keys, [*ps.HOSTILE_STRINGS, "no.such.key"]),
        ("settings/get", "key"): pick(settings_keys, [*ps.HOSTILE_STRINGS, "no.such.key"]),
        ("settings/set", "value"): pick([0, 1, True, "", "x", [], ["/nonexistent"], 0.5, None],
                                        list(ps.HOSTILE_ANY) + [-1, 2**63, 1e308, ["/etc/passwd"], "\x00"]),
        ("*", "workflow"): pick(docs + ["fz-ok"], HOSTILE_DOCS + list(ps.HOSTILE_ANY)),
        ("workflows/blocks/run", "kind"): pick(list(block_inputs), [*ps.HOSTILE_STRINGS]),
        ("workflows/blocks/run", "inputs"): pick(list(block_inputs.values()),
                                                 list(ps.HOSTILE_ANY[:4]) + [{"ms": 86_400_001}, {"ms": -1},
                                                                             {"items": list(range(100_001))},
                                                                             {"url": "http://127.0.0.1:9/\x00"}]),
        ("*", "cron"): pick(["*/5 * * * *", "0 0 * * *", "@hourly", "0 0 31 2 *", "59 23 29 2 1", None],
                            ["", "* * * * * * *", "60 * * * *", "*/0 * * * *", "-1 * * * *", "1-1000000 * * * *",
                             "x" * 10_240, "\x00", "@reboot", "0 0 0 0 0", "* * * * *\n* * * * *"]),
        ("*", "every"): pick(["1h", "30s", "1d", None],
                             ["0s", "-1s", "1e308s", "99999999999999999999d", "1ms", "0.0001s", "s", "1", "1 h", ""]),
        ("*", "at"): pick(["2030-01-01T00:00:00Z", None],
                          ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2030-02-30T00:00:00Z",
                           "2030-01-01T00:00:00+25:00", "1970-01-01T00:00:00Z", "now", ""]),
        ("*", "after"): pick(["2030-01-01T00:00:00Z", None], ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "x"]),
        ("*", "since"): pick(["2030-01-01T00:00:00Z", None], ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "x"]),
        ("*", "timezone"): pick(["UTC", "Asia/Seoul", "America/New_York"],
                                ["../../etc/passwd", "/etc/localtime", "Etc/GMT+14", "Factory", "\x00", "",
                                 "UTC/../../../etc/passwd", "x" * 64, "Asia/Seoul\x00"]),
        ("plugins/install", "path"): pick([str(REPO / "plugins" / "text-tools"), str(run_dir)], list(ps.HOSTILE_STRINGS)),
    }


# ---- the daemon ---------------------------------------------------------------------------


class Fuzzed:
    """One daemon for the module; restarted (and the death recorded) if an example kills it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir()
        self.run_dir = root / "files"
        self.run_dir.mkdir()
        self.env = {**os.environ, "HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED, "ALL_PROXY": CLOSED,
                    "http_proxy": CLOSED, "https_proxy": CLOSED, "all_proxy": CLOSED, "NO_PROXY": "", "no_proxy": ""}
        self.pool = ps.Pool()
        self.offered: set[str] = set()
        #: (method, "result" | error kind) -> count: how deep the examples went (SIDECAR_FUZZ_STATS=<file>)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.client = self._start()
        self._seed()
        self.overrides = _overrides(self.pool, self.run_dir)

    def _start(self) -> DaemonClient:
        client = DaemonClient(serve_argv(self.data_dir), env=self.env, stderr=subprocess.DEVNULL)
        self.offered = set(client.initialize("params-fuzz")["methods"])
        return client

    def alive(self) -> DaemonClient:
        if self.client.proc.poll() is not None:  # an example killed it: that test failed; go on
            self.client = self._start()
        return self.client

    def _seed(self) -> None:
        """What never changes: settings keys, agents, method names."""
        c, add = self.client, self.pool.add
        for s in c.request("settings/list")["settings"]:
            add("settings/list:key", s["key"])
        for agent in c.request("agents/list", {"limit": 5})["agents"]:
            add("agents:name", agent["name"]), add("agent", agent["name"])
        for name in ("system/ping", "chat/send", "no/such"):
            add("system/describe:method", name)
        add("intent", "Search"), add("intent", "SendMessage")
        add("plugins:tool", "case"), add("plugins:tool", "wordcount")
        add("workflowId", "fz-ok"), add("workflows/duplicate:newId", "fz-ok")
        self.refresh()

    def _exists(self, method: str, params: dict[str, Any]) -> bool:
        return "result" in self.client.call(method, params, timeout=ANSWER_BOUND)

    def refresh(self) -> None:
        """Real things to name, made again when an earlier example deleted them: the pool's
        ids send requests down their deeper paths. Each test starts with them all."""
        c, pool = self.alive(), self.pool
        first = lambda key: (pool.ids.get(key) or [""])[0]  # noqa: E731
        if not self._exists("projects/get", {"id": first("projectId") or "-"}):
            project = c.request("projects/create", {"name": "fuzz"})["id"]
            pool.set("projects:id", project), pool.set("projectId", project)
        project = first("projectId")
        if not self._exists("projects/files/get", {"projectId": project, "path": "notes/a.txt"}):
            c.request("projects/files/put", {"projectId": project, "path": "notes/a.txt", "text": "hello"})
            pool.set("projects/files:path", "notes/a.txt")
        if not self._exists("conversations/get", {"id": first("conversationId") or "-"}):
            conversation = c.request("conversations/create", {"projectId": project})["id"]
            pool.set("conversations:id", conversation), pool.set("conversationId", conversation)
            c.request("conversations/append", {"conversationId": conversation, "role": "user",
                                               "content": [{"type": "text", "text": "hi"}]})
        if not self._exists("workflows/get", {"id": "fz-ok"}):
            c.request("workflows/create", {"workflow": _workflow_docs(self.run_dir)[0]})
            pool.set("workflows:id", "fz-ok")
        if not self._exists("workflows/runs/get", {"runId": first("runId") or "-"}):
            pool.set("runId", c.request("workflows/start", {"id": "fz-ok", "inputs": {"x": 1}})["runId"])
        if not self._exists("scheduler/jobs/get", {"id": first("jobId") or "-"}):
            job = c.request("scheduler/jobs/create", {"name": "fz", "schedule": {"every": "1h"},
                                                      "target": {"type": "workflow", "id": "fz-ok"}})["id"]
            pool.set("scheduler:id", job), pool.set("jobId", job)
        patterns = [p["id"] for p in c.request("voice/patterns/list")["patterns"]]
        if first("voice/patterns:id") not in patterns:
            pool.set("voice/patterns:id", c.request("voice/patterns/create",
                                                    {"intent": "Search", "template": "fuzz {query}"})["id"])
        if not self._exists("voice/conversations/get", {"id": first("voice/conversations:id") or "-"}):
            voice_conv = c.request("voice/conversations/start", {})["id"]
            pool.set("voice/conversations:id", voice_conv), pool.set("voice/process:conversationId", voice_conv)
        c.request("providers/configure", {"id": "fuzzp", "kind": "anthropic", "model": "claude-x", "baseUrl": CLOSED,
                                          "apiKey": "k"})
        pool.set("providers:id", "fuzzp"), pool.set("provider", "fuzzp")
        c.request("mcp/servers/add", {"id": "fuzzmcp", "command": "/nonexistent/sidecar-fuzz-mcp", "enabled": False})
        pool.set("mcp:id", "fuzzmcp")
        if not self._exists("plugins/get", {"id": "text-tools"}):
            c.request("plugins/install", {"path": str(REPO / "plugins" / "text-tools")})
        c.request("plugins/enable", {"id": "text-tools"})
        pool.set("plugins:id", "text-tools")
        pool.set("subscriptionId", c.request("events/subscribe", {"topics": ["fuzz.*"]})["subscriptionId"])
        c.request("secrets/set", {"name": "fuzz.secret", "value": "v"})
        pool.set("secrets:name", "fuzz.secret")

    def close(self) -> None:
        self.client.close(timeout=5)
        target = os.environ.get("SIDECAR_FUZZ_STATS")
        if target:
            Path(target).write_text("\n".join(f"{n}\t{m}\t{o}" for (m, o), n in sorted(self.outcomes.items())) + "\n")


@pytest.fixture(scope="module")
def daemon_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    f = Fuzzed(tmp_path_factory.mktemp("params-fuzz"))
    yield f
    f.close()


@pytest.fixture
def fuzzed(daemon_for_module: Fuzzed) -> Fuzzed:
    """The module's daemon, with its seeded things there again."""
    daemon_for_module.refresh()
    return daemon_for_module


def _incident_log(fuzzed: Fuzzed, response: dict[str, Any]) -> str:
    """The log lines of an internal error's incident: what a failing example should show."""
    incident = ((response.get("error") or {}).get("data") or {}).get("incidentId")
    log = fuzzed.data_dir / "logs" / "sidecar.log"
    for _ in range(20):  # the log line may land just after the answer
        text = log.read_text("utf-8", errors="replace") if incident and log.exists() else ""
        at = text.find(incident) if incident else -1
        if at >= 0:
            return text[at:at + 4000]
        time.sleep(0.1)
    return ""


def send(fuzzed: Fuzzed, method: str, params: Any) -> dict[str, Any]:
    """One request, its answer checked; then the daemon must still answer a ping."""
    client = fuzzed.alive()
    if method not in fuzzed.offered:  # in the protocol, not yet served (work in progress)
        pytest.skip(f"the daemon does not offer {method}")
    request_id = client.next_id()
    waiter = client.expect(request_id)
    client.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    try:
        response = client.wait(request_id, waiter, ANSWER_BOUND)
    except TimeoutError:
        client.notify("$/cancelRequest", {"id": request_id})
        raise AssertionError(f"{method} hung: no answer in {ANSWER_BOUND}s to {_short(params)}") from None
    except ConnectionError as exc:
        raise AssertionError(f"{method} killed the daemon ({exc}) with {_short(params)}") from None
    assert response.get("jsonrpc") == "2.0" and response.get("id") == request_id, response
    assert ("result" in response) != ("error" in response), response
    fuzzed.outcomes[method, "result" if "result" in response else str((response["error"].get("data") or {}).get("kind"))] += 1
    if "error" in response:
        error = response["error"]
        assert isinstance(error.get("code"), int) and isinstance(error.get("message"), str), response
        assert isinstance((error.get("data") or {}).get("kind"), str), f"no data.kind: {response}"
        assert error["code"] != -32603, (f"{method} answered an internal error to {_short(params)}:\n{response}\n"
                                         f"{_incident_log(fuzzed, response)}")
    pong = client.call("system/ping", None, timeout=ANSWER_BOUND)
    assert pong.get("result") == {"pong": True}, pong
    assert client.garbage == [], f"not protocol on stdout after {method}: {client.garbage[:3]}"
    while not client.notifications.empty():  # streamed chunks and events: not asserted here
        client.notifications.get_nowait()
    return response


def _short(params: Any) -> str:
    text = msgspec.json.encode(params).decode(errors="replace")
    return text if len(text) < 600 else text[:600] + f"... ({len(text)} chars)"


#: examples per method and family: 12 keeps the file under a minute; raise it to hunt
FUZZ = settings(max_examples=int(os.environ.get("SIDECAR_FUZZ_EXAMPLES", "12")), derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


@pytest.mark.parametrize("spec", FUZZED, ids=lambda s: s.name)
@FUZZ
@given(data=st.data())
def test_wrong_types_answer_invalid_params(fuzzed: Fuzzed, spec: MethodSpec, data: st.DataObject) -> None:
    wrong = data.draw(ps.params(spec.params, spec.name, "wrong", fuzzed.pool, fuzzed.overrides, FILTERS))
    response = send(fuzzed, spec.name, wrong.params)
    if wrong.defect in ("type", "missing"):
        error = response.get("error") or {}
        assert error.get("code") == -32602, f"{wrong.defect} {wrong.field!r}: {response}"
        assert error["data"].get("path", "").startswith("$.params"), response


@pytest.mark.parametrize("spec", FUZZED, ids=lambda s: s.name)
@FUZZ
@given(data=st.data())
def test_hostile_values_answer_typed(fuzzed: Fuzzed, spec: MethodSpec, data: st.DataObject) -> None:
    send(fuzzed, spec.name, data.draw(ps.params(spec.params, spec.name, "hostile", fuzzed.pool, fuzzed.overrides, FILTERS)))


@pytest.mark.parametrize("spec", FUZZED, ids=lambda s: s.name)
@FUZZ
@given(data=st.data())
def test_valid_looking_params_answer_typed(fuzzed: Fuzzed, spec: MethodSpec, data: st.DataObject) -> None:
    send(fuzzed, spec.name, data.draw(ps.params(spec.params, spec.name, "valid", fuzzed.pool, fuzzed.overrides, FILTERS)))


def test_every_method_is_fuzzed_or_skipped_on_purpose() -> None:
    names = {m.name for m in METHODS}
    assert SKIP <= names, SKIP - names
    assert len(FUZZED) + len(SKIP & names) == len(names)

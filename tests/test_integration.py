"""Capabilities working together through their real services, over JSON-RPC (the real session
and every capability of the daemon, in process: tests/harness.py): scheduler jobs whose target
is a saved workflow or a chat turn, workflow `llm` steps through chat against recorded provider
streams on the local fixture server (tests/support/http_fixture.py), the LLM example workflows
end to end, and the notable events of plugins, the scheduler and chat on the event bus; last,
scheduled workflow and chat targets in the real daemon over stdio."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from sidecar.client import DaemonClient
from tests.harness import InProcessDaemon, RpcError, in_process
from tests.support.http_fixture import HttpFixtureServer, Response

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "workflows" / "examples"
LLM_FIXTURES = Path(__file__).parent / "fixtures" / "llm"
KEY = "sk-ant-test-SECRETKEY-0123456789"
MESSAGES = "/v1/messages"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def recorded(name: str = "anthropic_text.sse", **kw: Any) -> Response:
    """A provider stream recorded from Anthropic, replayed byte for byte."""
    return Response.from_file(LLM_FIXTURES / name, headers={"content-type": "text/event-stream"}, **kw)


def anthropic_stream(*pieces: str, input_tokens: int = 25, output_tokens: int = 15) -> Response:
    """The recorded Anthropic stream's shape (tests/fixtures/llm/anthropic_text.sse) with other text."""
    events: list[Any] = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": piece}}) for piece in pieces]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Response.sse(events)


@asynccontextmanager
async def daemon_at(tmp_path: Path) -> AsyncIterator[InProcessDaemon]:
    async with in_process(tmp_path / "data") as daemon:
        await daemon.call("settings/set", {"key": "llm.retryBaseMs", "value": 5})
        yield daemon


async def configure_provider(daemon: InProcessDaemon, server: HttpFixtureServer) -> None:
    await daemon.call("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                              "baseUrl": server.url, "apiKey": KEY})


def notes(daemon: InProcessDaemon, method: str) -> list[dict[str, Any]]:
    return [n["params"] for n in daemon.notifications if n["method"] == method]


async def until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    with anyio.fail_after(timeout):
        while True:
            value = predicate()
            if value:
                return value
            await anyio.sleep(0.01)


def bodies(server: HttpFixtureServer) -> list[dict[str, Any]]:
    return [r.json() for r in server.requests if r.path == MESSAGES]


def prompt_of(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


async def finished_run(daemon: InProcessDaemon, job_id: str, run_id: str) -> dict[str, Any]:
    """The scheduler/finished notification of one run."""
    return await until(lambda: next((n for n in notes(daemon, "scheduler/finished")
                                     if n["jobId"] == job_id and n["runId"] == run_id), None))


# --- 1. scheduler targets against the real services ---------------------------------------------

GREET = {"id": "greet", "name": "Greet", "inputs": {"name": {"type": "string", "default": "world"}},
         "steps": [{"id": "hello", "kind": "set", "inputs": {"value": "hello {{inputs.name}}"}},
                   {"id": "shout", "kind": "set", "inputs": {"value": "{{upper(steps.hello.output.value)}}"}}],
         "outputs": {"text": "{{steps.shout.output.value}}"}}


async def test_a_scheduled_job_runs_a_saved_workflow(tmp_path: Path) -> None:
    async with daemon_at(tmp_path) as daemon:
        await daemon.call("workflows/create", {"workflow": GREET})
        job = await daemon.call("scheduler/jobs/create", {
            "name": "greet nightly", "schedule": {"cron": "0 3 * * *"}, "timezone": "Europe/Berlin",
            "target": {"type": "workflow", "id": "greet", "inputs": {"name": "scheduler"}}})
        run = await daemon.call("scheduler/jobs/runNow", {"id": job["id"]})
        finished = await finished_run(daemon, job["id"], run["id"])
        assert finished["status"] == "succeeded", finished
        # the workflow run is on record, with the job's inputs and the workflow's outputs
        (wf_run,) = (await daemon.call("workflows/runs", {"workflowId": "greet"}))["runs"]
        assert wf_run["status"] == "succeeded"
        detail = await daemon.call("workflows/runs/get", {"runId": wf_run["runId"]})
        assert detail["inputs"] == {"name": "scheduler"} and detail["outputs"] == {"text": "HELLO SCHEDULER"}
        assert [s["status"] for s in detail["steps"]] == ["succeeded", "succeeded"]
        (history,) = (await daemon.call("scheduler/history", {"jobId": job["id"], "limit": 5}))["runs"]
        assert history["status"] == "succeeded" and history["output"]["runId"] == wf_run["runId"]
        assert history["output"]["outputs"] == {"text": "HELLO SCHEDULER"}


async def test_a_scheduled_workflow_that_fails_fails_the_job_run(tmp_path: Path) -> None:
    broken = {"id": "broken", "steps": [{"id": "read", "kind": "file", "inputs": {"op": "read",
                                                                               "path": "no-such-file.txt"}}]}
    async with daemon_at(tmp_path) as daemon:
        await daemon.call("workflows/create", {"workflow": broken})
        job = await daemon.call("scheduler/jobs/create", {"name": "b", "schedule": {"every": "1h"},
                                                          "target": {"type": "workflow", "id": "broken"}})
        run = await daemon.call("scheduler/jobs/runNow", {"id": job["id"]})
        finished = await finished_run(daemon, job["id"], run["id"])
        assert finished["status"] == "failed" and "broken failed" in finished["error"]
        (wf_run,) = (await daemon.call("workflows/runs", {"workflowId": "broken"}))["runs"]
        assert wf_run["status"] == "failed" and wf_run["error"]["stepId"] == "read"
        # a job may not point at a workflow that does not exist
        with pytest.raises(RpcError) as caught:
            await daemon.call("scheduler/jobs/create", {"name": "x", "schedule": {"every": "1h"},
                                                        "target": {"type": "workflow", "id": "nope"}})
        assert caught.value.kind == "not_found" and caught.value.error["data"]["details"]["path"] == "$.params.target.id"


async def test_a_scheduled_job_runs_a_chat_turn(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, recorded(chunk_size=9))
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        job = await daemon.call("scheduler/jobs/create", {
            "name": "morning note", "schedule": {"cron": "0 8 * * 1-5"}, "timezone": "America/New_York",
            "target": {"type": "chat", "agent": "customer-support-replier", "prompt": "Say hello",
                       "provider": "main"}})
        run = await daemon.call("scheduler/jobs/runNow", {"id": job["id"]})
        finished = await finished_run(daemon, job["id"], run["id"])
        assert finished["status"] == "succeeded", finished
        (history,) = (await daemon.call("scheduler/history", {"jobId": job["id"], "limit": 5}))["runs"]
        output = history["output"]
        assert output["text"] == "Hello!" and output["provider"] == "main"
        assert output["usage"] == {"inputTokens": 25, "outputTokens": 15}
        (body,) = bodies(http_fixture)
        assert prompt_of(body) == "Say hello" and "support" in json.dumps(body["system"]).lower()
        # the turn is stored as a conversation like any other
        conversation = await daemon.call("conversations/get", {"id": output["conversationId"]})
        assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
        # an unknown agent is refused when the job is made, naming the field
        with pytest.raises(RpcError) as caught:
            await daemon.call("scheduler/jobs/create", {"name": "x", "schedule": {"every": "1h"},
                                                        "target": {"type": "chat", "agent": "nobody", "prompt": "hi"}})
        assert caught.value.kind == "not_found" and caught.value.error["data"]["details"]["path"] == "$.params.target.agent"


# --- 2. llm steps through chat, streaming ------------------------------------------------------------

async def test_an_llm_step_streams_its_chunks_as_workflow_events(tmp_path: Path,
                                                                 http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, anthropic_stream("Bonjour", ", ", "le ", "monde"))
    doc = {"id": "ask", "inputs": {"who": {"type": "string", "default": "world"}},
           "steps": [{"id": "ask", "kind": "llm", "inputs": {"prompt": "Greet {{inputs.who}} in French",
                                                             "system": "Be brief.", "maxTokens": 100}},
                     {"id": "loud", "kind": "set", "inputs": {"value": "{{upper(steps.ask.output.text)}}"}}],
           "outputs": {"text": "{{steps.ask.output.text}}", "loud": "{{steps.loud.output.value}}",
                       "usage": "{{steps.ask.output.usage}}"}}
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        result = await daemon.call("workflows/run", {"workflow": doc})
        assert result["status"] == "succeeded", result
        assert result["outputs"]["text"] == "Bonjour, le monde" and result["outputs"]["loud"] == "BONJOUR, LE MONDE"
        assert result["outputs"]["usage"] == {"inputTokens": 25, "outputTokens": 15, "provider": "main",
                                              "model": "claude-sonnet-4-5-20250929"}
        events = [e for e in notes(daemon, "workflows/event") if e["runId"] == result["runId"]]
        chunks = [e for e in events if e["type"] == "step.chunk"]
        assert [c["text"] for c in chunks] == ["Bonjour", ", ", "le ", "monde"]
        assert {c["stepId"] for c in chunks} == {"ask"}
        types = [e["type"] for e in events]
        # chunks come between the step's start and its success, in order, with the run's seqs
        assert types.index("step.started") < types.index("step.chunk") < types.index("step.succeeded")
        assert [e["runSeq"] for e in events] == sorted(e["runSeq"] for e in events)
        (body,) = bodies(http_fixture)
        assert prompt_of(body) == "Be brief.\n\nGreet world in French" and body["max_tokens"] == 100
        # the chunks are in the run's durable log too
        logged = (await daemon.call("workflows/events", {"runId": result["runId"]}))["events"]
        assert "".join(e["payload"]["text"] for e in logged if e["type"] == "step.chunk") == "Bonjour, le monde"


async def test_an_llm_block_runs_alone_and_a_provider_error_fails_the_step(tmp_path: Path,
                                                                          http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, recorded(), recorded("anthropic_overloaded.sse"))
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        blocks = {b["id"]: b for b in (await daemon.call("workflows/blocks", {}))["blocks"]}
        assert blocks["llm"].get("available", True) is True  # omitted when true
        out = await daemon.call("workflows/blocks/run", {"kind": "llm", "inputs": {"prompt": "hi"}})
        assert out["output"]["text"] == "Hello!" and out["output"]["stopReason"] == "end_turn"
        doc = {"id": "ask", "steps": [{"id": "ask", "kind": "llm", "inputs": {"prompt": "hi"}}]}
        result = await daemon.call("workflows/run", {"workflow": doc})
        assert result["status"] == "failed" and result["error"]["stepId"] == "ask"
        assert result["error"]["kind"] == "provider_error"


# --- 2b. the LLM example workflows, end to end ----------------------------------------------------

def example(name: str) -> str:
    return (EXAMPLES / name).read_text()


async def test_example_summarize_url(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    page = "<html><body><h1>Release 2.0</h1><p>Faster start-up and a new plugin API.</p></body></html>"
    http_fixture.route("GET", "/release", Response(200, {"content-type": "text/html"}, page))
    http_fixture.route("POST", MESSAGES, anthropic_stream("- Faster start-up\n", "- A new plugin API"))
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        await daemon.call("workflows/create", {"workflow": example("summarize-url.yaml")})
        result = await daemon.call("workflows/run", {"id": "summarize-url",
                                                     "inputs": {"url": http_fixture.url_for("/release"),
                                                                "bullets": 2}})
        assert result["status"] == "succeeded", result
        assert result["outputs"] == {"summary": "- Faster start-up\n- A new plugin API", "status": 200}
        (body,) = bodies(http_fixture)
        prompt = prompt_of(body)
        assert "at most 2 bullet points" in prompt and "new plugin API" in prompt
        chunks = [e["text"] for e in notes(daemon, "workflows/event") if e["type"] == "step.chunk"]
        assert chunks == ["- Faster start-up\n", "- A new plugin API"]


async def test_example_triage_issue_runs_two_agents(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/issues/7", Response.json({"title": "Crash on save",
                                                          "body": "The app crashes when I save a file."}))
    classification = '{"type": "bug", "severity": 2}'
    reply = "Thanks for the report! We are looking into it."
    # the two llm steps run side by side: answer each by what its agent asked
    http_fixture.route("POST", MESSAGES, anthropic_stream(classification), anthropic_stream(reply))
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        await daemon.call("workflows/create", {"workflow": example("triage-issue.yaml")})
        result = await daemon.call("workflows/run", {"id": "triage-issue",
                                                     "inputs": {"issueUrl": http_fixture.url_for("/issues/7")}})
        assert result["status"] == "succeeded", result
        triage = result["outputs"]["triage"]
        assert triage["title"] == "Crash on save"
        sent = bodies(http_fixture)
        assert len(sent) == 2
        for body in sent:
            assert "Crash on save" in prompt_of(body) and "crashes when I save" in prompt_of(body)
        # the steps ran side by side, so which got which stream depends on arrival: each kept
        # the text it streamed, and each asked with its own agent
        assert {triage["classification"], triage["reply"]} == {classification, reply}
        streamed: dict[str, str] = {}
        for e in notes(daemon, "workflows/event"):
            if e["type"] == "step.chunk":
                streamed[e["stepId"]] = streamed.get(e["stepId"], "") + e["text"]
        assert streamed == {"classify": triage["classification"], "reply": triage["reply"]}
        systems = {("Classify" in prompt_of(b)): json.dumps(b.get("system", "")).lower() for b in sent}
        assert "debt" in systems[True] and "support" in systems[False]


async def test_example_translate_en_ko(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    korean = "# 안녕하세요\n\n이것은 `sidecar`의 [문서](https://example.com)입니다.\n"
    http_fixture.route("POST", MESSAGES, anthropic_stream("# 안녕하세요\n\n", "이것은 `sidecar`의 ",
                                                          "[문서](https://example.com)입니다.\n"))
    async with daemon_at(tmp_path) as daemon:
        await configure_provider(daemon, http_fixture)
        root = tmp_path / "docs"
        root.mkdir()
        await daemon.call("settings/set", {"key": "workflows.fileRoots", "value": [str(root)]})
        (root / "readme.md").write_text("# Hello\n\nThis is the [documentation](https://example.com) of `sidecar`.\n")
        (root / "long.md").write_text("word " * 5000)
        await daemon.call("workflows/create", {"workflow": example("translate-en-ko.yaml")})
        result = await daemon.call("workflows/run", {"id": "translate-en-ko", "inputs": {"path": "readme.md"}})
        assert result["status"] == "succeeded", result
        assert result["outputs"]["written"] == str((root / "readme.md.ko.md").resolve())
        assert (root / "readme.md.ko.md").read_text() == korean
        (body,) = bodies(http_fixture)
        assert "This is the [documentation]" in prompt_of(body) and "Korean" in prompt_of(body)
        assert "korean" in json.dumps(body.get("system", "")).lower()  # the translator agent's prompt
        # a document that is too long takes the other branch and calls no model
        too_long = await daemon.call("workflows/run", {"id": "translate-en-ko", "inputs": {"path": "long.md"}})
        assert too_long["status"] == "succeeded"
        assert too_long["outputs"]["problem"].startswith("the document is longer")
        assert len(bodies(http_fixture)) == 1 and not (root / "long.md.ko.md").exists()


# --- 3. notable events of every capability on the bus ----------------------------------------------

def bus_events(daemon: InProcessDaemon, sub: str, topic: str) -> list[dict[str, Any]]:
    return [e for e in notes(daemon, "events/event") if e["subscriptionId"] == sub and e["topic"] == topic]


async def test_plugin_reloads_scheduler_firings_and_provider_errors_reach_subscribers(
        tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    plugin_src = REPO / "plugins" / "text-tools"
    if not (plugin_src / "text.wasm").exists():
        pytest.skip("the text-tools example plugin is not built")
    http_fixture.route("POST", MESSAGES, recorded("anthropic_overloaded.sse"))
    async with daemon_at(tmp_path) as daemon:
        sub = (await daemon.call("events/subscribe", {"topics": ["plugins.*", "scheduler.*", "llm.*"]}))
        sub_id = sub["subscriptionId"]
        # a plugin reload
        folder = tmp_path / "text-tools"
        shutil.copytree(plugin_src, folder)
        await daemon.call("plugins/install", {"path": str(folder)})
        await daemon.call("plugins/reload", {"id": "text-tools"})
        (reloaded,) = await until(lambda: bus_events(daemon, sub_id, "plugins.reloaded"))
        assert reloaded["payload"]["pluginId"] == "text-tools" and reloaded["payload"]["ok"] is True
        # a scheduler firing (and its end)
        await daemon.call("workflows/create", {"workflow": GREET})
        job = await daemon.call("scheduler/jobs/create", {"name": "g", "schedule": {"every": "1h"},
                                                          "target": {"type": "workflow", "id": "greet"}})
        run = await daemon.call("scheduler/jobs/runNow", {"id": job["id"]})
        (fired,) = await until(lambda: bus_events(daemon, sub_id, "scheduler.fired"))
        assert fired["payload"]["jobId"] == job["id"] and fired["payload"]["runId"] == run["id"]
        (done,) = await until(lambda: bus_events(daemon, sub_id, "scheduler.finished"))
        assert done["payload"]["status"] == "succeeded"
        # a provider error
        await configure_provider(daemon, http_fixture)
        with pytest.raises(RpcError):
            await daemon.call("chat/send", {"message": "hi"})
        (error,) = await until(lambda: bus_events(daemon, sub_id, "llm.providerError"))
        payload = error["payload"]
        assert payload["provider"] == "main" and payload["kind"] == "provider_error"
        assert payload["errorType"] == "overloaded_error" and KEY not in json.dumps(payload)
        # what the subscriber saw is in the durable log, in the same order
        seen = [e["seq"] for e in notes(daemon, "events/event") if e["subscriptionId"] == sub_id]
        replay = await daemon.call("events/replay", {"afterSeq": sub["lastSeq"],
                                                     "topics": ["plugins.*", "scheduler.*", "llm.*"]})
        assert [e["seq"] for e in replay["events"]] == seen
        # workflow events were not asked for
        assert not [e for e in notes(daemon, "events/event") if e["topic"].startswith("workflow.")]


# --- the real daemon ---------------------------------------------------------------------------------

def test_the_real_daemon_runs_a_scheduled_workflow_and_chat_turn(daemon: DaemonClient,
                                                                  http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", MESSAGES, recorded())
    daemon.request("providers/configure", {"id": "main", "kind": "anthropic", "model": "claude-sonnet-4-5",
                                           "baseUrl": http_fixture.url, "apiKey": KEY})
    daemon.request("workflows/create", {"workflow": GREET})
    targets = [{"type": "workflow", "id": "greet", "inputs": {"name": "daemon"}},
               {"type": "chat", "agent": "customer-support-replier", "prompt": "Say hello"}]
    jobs = [daemon.request("scheduler/jobs/create", {"name": t["type"], "schedule": {"every": "1d"}, "target": t})
            for t in targets]
    for job in jobs:
        daemon.request("scheduler/jobs/runNow", {"id": job["id"]})
    deadline = time.monotonic() + 20
    outputs: dict[str, Any] = {}
    while len(outputs) < 2 and time.monotonic() < deadline:
        for job in jobs:
            runs = daemon.request("scheduler/history", {"jobId": job["id"], "limit": 1})["runs"]
            if runs and runs[0]["status"] not in ("pending", "running"):
                assert runs[0]["status"] == "succeeded", runs[0]
                outputs[job["name"]] = runs[0]["output"]
        time.sleep(0.05)
    assert outputs["workflow"]["outputs"] == {"text": "HELLO DAEMON"} and outputs["chat"]["text"] == "Hello!"
    (run,) = daemon.request("workflows/runs", {"workflowId": "greet"})["runs"]
    assert run["runId"] == outputs["workflow"]["runId"] and run["status"] == "succeeded"

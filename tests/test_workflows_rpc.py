"""Workflows and events end to end: the real daemon over stdio. Runs stream workflows/event,
a run survives kill -9 of the daemon (completed steps are not repeated; the step in flight is
retried with the same idempotency key), events are replayed from the durable log after a
reconnect, cancelling a workflows/run request cancels its run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.client import DaemonClient, RpcError
from tests.support.http_fixture import HttpFixtureServer, Response


def notifications(client: DaemonClient, method: str) -> list[dict[str, Any]]:
    out = []
    while not client.notifications.empty():
        message = client.notifications.get_nowait()
        if message.get("method") == method:
            out.append(message["params"])
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


DOC = {"id": "greet", "inputs": {"name": {"type": "string", "default": "world"}},
       "steps": [{"id": "hello", "kind": "set", "inputs": {"value": "hello {{inputs.name}}"}, "ui": {"x": 1, "y": 2}},
                 {"id": "shout", "kind": "set", "inputs": {"value": "{{upper(steps.hello.output.value)}}"}}],
       "outputs": {"text": "{{steps.shout.output.value}}"}}


def test_workflows_over_rpc(daemon: DaemonClient) -> None:
    created = daemon.request("workflows/create", {"workflow": DOC})
    assert created["version"] == 1 and created["workflow"]["steps"][0]["ui"] == {"x": 1, "y": 2}
    assert [w["id"] for w in daemon.request("workflows/list")["workflows"]] == ["greet"]
    result = daemon.request("workflows/run", {"id": "greet", "inputs": {"name": "sidecar"}})
    assert result["status"] == "succeeded" and result["outputs"] == {"text": "HELLO SIDECAR"}
    events = notifications(daemon, "workflows/event")
    assert [e["type"] for e in events] == ["run.started", "step.started", "step.succeeded", "step.started",
                                           "step.succeeded", "run.finished"]
    assert [e["seq"] for e in events] == list(range(6)) and all(e["runId"] == result["runId"] for e in events)
    detail = daemon.request("workflows/runs/get", {"runId": result["runId"]})
    assert [(s["stepId"], s["status"], s["attempts"]) for s in detail["steps"]] == [("hello", "succeeded", 1),
                                                                                    ("shout", "succeeded", 1)]
    log = daemon.request("workflows/events", {"runId": result["runId"], "afterSeq": 4})["events"]
    assert [e["type"] for e in log] == ["step.succeeded", "run.finished"]
    problems = daemon.request("workflows/validate", {"workflow": {"steps": [{"id": "a", "kind": "nope"}]}})
    assert not problems["valid"] and problems["problems"][0]["path"] == "$.steps[0].kind"
    with pytest.raises(RpcError) as info:
        daemon.request("workflows/create", {"workflow": "id: bad\nsteps:\n  - {id: a, kind: http, inputs: {}}\n"})
    assert info.value.code == -32602 and info.value.error["data"]["path"] == "$.params.workflow.steps[0].inputs.url"
    blocks = daemon.request("workflows/blocks", {"category": "network"})["blocks"]
    assert [b["id"] for b in blocks] == ["http"]
    assert daemon.request("workflows/blocks/run", {"kind": "set", "inputs": {"value": [1]}}) == {"output": {"value": [1]}}


def test_cancelling_a_run_request_cancels_the_run(daemon: DaemonClient) -> None:
    request_id = daemon.next_id()
    waiter = daemon.expect(request_id)
    daemon.send({"jsonrpc": "2.0", "id": request_id, "method": "workflows/run",
                 "params": {"workflow": {"id": "slow", "steps": [{"id": "d", "kind": "delay", "inputs": {"ms": 60000}}]}}})
    wait_for(lambda: any(n.get("method") == "workflows/event" and n["params"]["type"] == "step.started"
                         for n in list(daemon.notifications.queue)))
    daemon.notify("$/cancelRequest", {"id": request_id})
    answer = daemon.wait(request_id, waiter)
    assert answer["error"]["code"] == -32800
    runs = wait_for(lambda: [r for r in daemon.request("workflows/runs")["runs"] if r["status"] == "cancelled"])
    assert runs[0]["workflowId"] == "slow"


def test_a_run_survives_kill_9_without_repeating_completed_steps(spawn: Callable[..., DaemonClient],
                                                                  http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/charge", Response.json({"charged": True}))
    http_fixture.route("POST", "/ship", Response.json({"shipped": True}, delay_before=1.5))
    http_fixture.route("POST", "/notify", Response.json({"ok": True}))
    url = http_fixture.url
    doc = {"id": "order", "steps": [
        {"id": "charge", "kind": "http", "inputs": {"method": "POST", "url": url + "/charge"}},
        {"id": "ship", "kind": "http", "inputs": {"method": "POST", "url": url + "/ship"}, "needs": ["charge"]},
        {"id": "notify", "kind": "http", "inputs": {"method": "POST", "url": url + "/notify",
                                                    "body": {"shipped": "{{steps.ship.output.body.shipped}}"}}}],
        "outputs": {"shipped": "{{steps.ship.output.body.shipped}}"}}
    first = spawn()
    run_id = first.request("workflows/start", {"workflow": doc})["runId"]
    wait_for(lambda: http_fixture.calls("POST", "/ship") == 1)  # `ship` is in flight
    first.proc.kill()  # kill -9: no clean shutdown at all
    first.proc.wait(timeout=5)
    assert http_fixture.calls("POST", "/notify") == 0

    second = spawn()  # same data dir: the run resumes at start-up
    detail = wait_for(lambda: (d := second.request("workflows/runs/get", {"runId": run_id}))["run"]["status"]
                      != "running" and d, timeout=20)
    assert detail["run"]["status"] == "succeeded" and detail["outputs"] == {"shipped": True}
    assert http_fixture.calls("POST", "/charge") == 1  # completed before the kill: not repeated
    assert http_fixture.calls("POST", "/ship") == 2  # in flight at the kill: retried...
    keys = {r.header("idempotency-key") for r in http_fixture.requests if r.path == "/ship"}
    assert keys == {f"{run_id}:ship"}  # ...with the same idempotency key
    assert http_fixture.calls("POST", "/notify") == 1
    types = [e["type"] for e in second.request("workflows/events", {"runId": run_id})["events"]]
    assert "run.resumed" in types and types[-1] == "run.finished"


def test_events_subscribe_and_replay_after_reconnect(spawn: Callable[..., DaemonClient]) -> None:
    first = spawn()
    sub = first.request("events/subscribe", {"topics": ["workflow.run.*", "demo.*"]})
    first.request("events/publish", {"topic": "demo.hello", "payload": {"n": 1}})
    first.request("events/publish", {"topic": "ignored.topic"})
    result = first.request("workflows/run", {"workflow": DOC})
    got: list[dict[str, Any]] = []
    wait_for(lambda: got.extend(notifications(first, "events/event")) or len(got) >= 3)
    assert [(e["topic"], e["subscriptionId"]) for e in got] == [("demo.hello", sub["subscriptionId"]),
                                                                 ("workflow.run.started", sub["subscriptionId"]),
                                                                 ("workflow.run.finished", sub["subscriptionId"])]
    assert got[2]["payload"]["runId"] == result["runId"] and got[2]["payload"]["status"] == "succeeded"
    seen = got[0]["seq"]
    first.close()

    second = spawn()  # a reconnecting shell catches up from the last seq it saw
    replay = second.request("events/replay", {"afterSeq": seen, "topics": ["workflow.run.*"]})
    assert [e["topic"] for e in replay["events"]] == ["workflow.run.started", "workflow.run.finished"]
    assert replay["lastSeq"] >= replay["events"][-1]["seq"] and not replay["more"]
    assert second.request("events/unsubscribe", {"subscriptionId": "nope"}) == {"removed": False}



def test_events_with_a_cursor_past_64_bits(daemon: DaemonClient) -> None:
    # found by tests/test_params_fuzz.py: afterSeq 2**63 answered -32603 (it did not bind)
    daemon.request("workflows/create", {"workflow": DOC})
    run_id = daemon.request("workflows/run", {"id": "greet", "inputs": {"name": "x"}})["runId"]
    for after, count in ((2**63, 0), (2**64, 0), (-(2**64), 6), (-1, 6)):
        events = daemon.request("workflows/events", {"runId": run_id, "afterSeq": after})["events"]
        assert len(events) == count, (after, events)

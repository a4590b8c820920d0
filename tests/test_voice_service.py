"""voice/* over JSON-RPC in process: intents in English and Korean, routing for real through
the workflows, scheduler and tool services, near-miss confirmation over two turns (surviving a
restart), custom patterns, conversations, and typed errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("hassil")
pytest.importorskip("rapidfuzz")

from sidecar.capability import Capability, Platform  # noqa: E402
from sidecar.toolsource import ToolCall, ToolInfo, ToolResult  # noqa: E402
from tests.harness import RpcError, in_process  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


BACKUP = {"id": "daily-backup", "name": "daily backup",
          "steps": [{"id": "copy", "kind": "set", "inputs": {"value": "backed up"}}]}


class RecordingTools:
    """A real ToolSource (as the scheduler's tests use): records each call."""

    prefix = "t"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def list_tools(self) -> list[ToolInfo]:
        return [ToolInfo("t__data_processing", "process data", {"type": "object"})]

    async def call(self, name: str, arguments: dict[str, Any], call: ToolCall) -> ToolResult:
        self.calls.append((name, arguments))
        return ToolResult({"processed": True})


TOOLS = RecordingTools()


class ToolsCapability(Capability):
    name = "voice-test-tools"

    def __init__(self, platform: Platform) -> None:
        super().__init__(platform)
        platform.tools.add(TOOLS)


def extras() -> tuple[type[Capability], ...]:
    from sidecar.app import CAPABILITIES
    from sidecar.scheduler.capability import SchedulerCapability
    from sidecar.voice.capability import VoiceCapability
    from sidecar.workflows.capability import WorkflowsCapability

    out: list[type[Capability]] = [c for c in (WorkflowsCapability, SchedulerCapability) if c not in CAPABILITIES]
    out.append(ToolsCapability)
    if VoiceCapability not in CAPABILITIES:
        out.append(VoiceCapability)
    return tuple(out)


def daemon(path: Path) -> Any:
    return in_process(path, extra=extras())


async def text(d: Any, said: str, conv: str | None = None, **kw: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"text": said, "speak": False, **kw}
    if conv:
        params["conversationId"] = conv
    return await d.call("voice/process", params, timeout=30)


@pytest.mark.parametrize("said, intent, slots", [
    ("데이터 분석 스킬 실행", "ExecuteSkill", {"skill": "데이터 분석"}),
    ("데이터 분석 스킬을 실행해 주세요", "ExecuteSkill", {"skill": "데이터 분석"}),
    ("백업 레시피 실행", "RunRecipe", {"recipe": "백업"}),
    ("백업 레시피를 실행해 줘", "RunRecipe", {"recipe": "백업"}),
    ("안녕 메시지 보내", "SendMessage", {"message": "안녕"}),
    ("안녕이라고 보내 줘", "SendMessage", {"message": "안녕"}),
    ("설정 열기", "OpenSettings", {}),
    ("설정 좀 열어 주세요", "OpenSettings", {}),
    ("매일 9시에 백업 레시피 실행해 줘", "ScheduleRecipe", {"recipe": "백업", "hour": 9}),
    ("날씨 검색해 줘", "Search", {"query": "날씨"}),
    ("다크 모드로 바꿔 줘", "SwitchMode", {"mode": "dark"}),
    ("취소해 주세요", "Stop", {}),
    ("네", "Confirm", {}),
    ("아니요", "Deny", {}),
])
async def test_korean_intents_from_text(tmp_path: Path, said: str, intent: str, slots: dict[str, Any]) -> None:
    async with daemon(tmp_path / "d") as d:
        u = await d.call("voice/understand", {"text": said})
    assert u["language"] == "ko"
    assert u["intent"] == intent, u
    assert {k: u["slots"].get(k) for k in slots} == slots


@pytest.mark.parametrize("said, intent, slots", [
    ("execute data processing skill", "ExecuteSkill", {"skill": "t__data_processing"}),
    ("Could you please run the data processing tool for me?", "ExecuteSkill", {"skill": "t__data_processing"}),
    ("run daily backup recipe", "RunRecipe", {"recipe": "daily-backup"}),
    ("Please start the daily backup workflow now.", "RunRecipe", {"recipe": "daily-backup"}),
    ("send hello world message", "SendMessage", {"message": "hello world"}),
    ("open settings", "OpenSettings", {}),
    ("can you show me the projects page", "OpenFeature", {"feature": "projects"}),
    ("search for weather", "Search", {"query": "weather"}),
    ("run the daily backup every day at 9", "ScheduleRecipe", {"recipe": "daily-backup", "hour": 9}),
    ("what is the weather in Seoul", "Ask", {}),
    ("never mind", "Stop", {}),
    ("yes please", "Confirm", {}),
])
async def test_english_phrasings(tmp_path: Path, said: str, intent: str, slots: dict[str, Any]) -> None:
    async with daemon(tmp_path / "d") as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        u = await d.call("voice/understand", {"text": said})
    assert u["language"] == "en" and u["intent"] == intent, u
    assert {k: u["slots"].get(k) for k in slots} == slots
    assert 0.6 <= u["confidence"] <= 1.0


async def test_unknown_is_explicit_and_offers_the_closest(tmp_path: Path) -> None:
    async with daemon(tmp_path / "d") as d:
        r = await text(d, "purple monkey dishwasher")
    assert r["intent"] == "unknown" and r["routing"]["status"] == "unknown"
    assert len(r["understanding"]["closest"]) == 3 and "Did you mean" in r["reply"]


async def test_exact_names_execute_for_real(tmp_path: Path) -> None:
    TOOLS.calls.clear()
    async with daemon(tmp_path / "d") as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        run = await text(d, "run daily backup recipe")
        assert run["routing"]["status"] == "executed" and run["routing"]["target"] == "workflow"
        assert run["routing"]["detail"]["status"] == "succeeded"
        runs = await d.call("workflows/runs", {"workflowId": "daily-backup"})
        assert [x["runId"] for x in runs["runs"]] == [run["routing"]["detail"]["runId"]]
        skill = await text(d, "execute data processing skill")
        assert skill["routing"]["status"] == "executed" and skill["routing"]["target"] == "tool"
        assert TOOLS.calls == [("t__data_processing", {})]
        sched = await text(d, "please run the daily backup every day at 9 am")
        assert sched["routing"]["status"] == "executed", sched
        job = await d.call("scheduler/jobs/get", {"id": sched["routing"]["detail"]["jobId"]})
        assert job["schedule"] == {"cron": "0 9 * * *"} and job["target"]["id"] == "daily-backup"
        opened = await text(d, "open settings")
        assert opened["routing"]["status"] == "executed"
        with anyio.fail_after(5):
            while not any(n["method"] == "voice/open" for n in d.notifications):
                await anyio.sleep(0.01)
        (note,) = [n["params"] for n in d.notifications if n["method"] == "voice/open"]
        assert note == {"kind": "settings", "target": "settings", "conversationId": opened["conversationId"]}


async def test_near_miss_asks_then_yes_runs_it_even_after_a_restart(tmp_path: Path) -> None:
    async with daemon(tmp_path / "d") as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        first = await text(d, "run daily markup recipe")
        assert first["routing"]["status"] == "confirm" and first["routing"]["name"] == "daily-backup"
        assert "daily backup" in first["reply"] and "yes or no" in first["reply"]
        assert (await d.call("workflows/runs", {"workflowId": "daily-backup"}))["runs"] == []  # not run
        conv = first["conversationId"]
        detail = await d.call("voice/conversations/get", {"id": conv})
        assert detail["conversation"]["pending"]["name"] == "daily-backup"
    async with daemon(tmp_path / "d") as d:  # a restart: the pending confirmation is in the database
        second = await text(d, "yes", conv)
        assert second["intent"] == "Confirm" and second["routing"]["status"] == "executed"
        assert second["routing"]["target"] == "workflow" and second["routing"]["detail"]["status"] == "succeeded"
        detail = await d.call("voice/conversations/get", {"id": conv})
        assert "pending" not in detail["conversation"]
        assert [t["role"] for t in detail["turns"]] == ["user", "assistant"] * 2
        assert detail["turns"][0]["text"] == "run daily markup recipe" and detail["turns"][2]["intent"] == "Confirm"
        third = await text(d, "yes", conv)
        assert third["routing"]["status"] == "nothing_pending"


async def test_near_miss_then_no_drops_it(tmp_path: Path) -> None:
    async with daemon(tmp_path / "d") as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        first = await text(d, "백업 레시피 실행해 줘")  # no workflow named 백업: not found, nothing run
        assert first["routing"]["status"] == "not_found"
        first = await text(d, "run daily markup recipe")
        second = await text(d, "no", first["conversationId"])
        assert second["routing"]["status"] == "denied"
        assert (await d.call("workflows/runs", {"workflowId": "daily-backup"}))["runs"] == []
        assert "pending" not in (await d.call("voice/conversations/get", {"id": first["conversationId"]}))["conversation"]


async def test_custom_patterns_are_validated_and_effective_at_once(tmp_path: Path) -> None:
    async with daemon(tmp_path / "d") as d:
        await d.call("workflows/create", {"workflow": BACKUP})
        assert (await d.call("voice/understand", {"text": "back me up scotty"}))["intent"] == "unknown"
        p = await d.call("voice/patterns/create", {"intent": "RunRecipe", "template": "back me up (scotty|now)",
                                                   "slots": {"recipe": "daily-backup"}})
        u = await d.call("voice/understand", {"text": "back me up scotty"})
        assert u["intent"] == "RunRecipe" and u["slots"]["recipe"] == "daily-backup"
        assert [x["id"] for x in (await d.call("voice/patterns/list", {}))["patterns"]] == [p["id"]]
        with pytest.raises(RpcError) as e:
            await d.call("voice/patterns/create", {"intent": "RunRecipe", "template": "run (the|a {recipe}"})
        assert e.value.code == -32602 and "position 5" in str(e.value)
        with pytest.raises(RpcError) as e:
            await d.call("voice/patterns/create", {"intent": "RunRecipe", "template": "run {no_such_list}"})
        assert e.value.code == -32602
        with pytest.raises(RpcError) as e:
            await d.call("voice/patterns/create", {"intent": "Dance", "template": "dance"})
        assert e.value.code == -32602
        await d.call("voice/patterns/update", {"id": p["id"], "template": "engage backup"})
        assert (await d.call("voice/understand", {"text": "back me up scotty"}))["intent"] == "unknown"
        assert (await d.call("voice/understand", {"text": "engage backup"}))["intent"] == "RunRecipe"
        await d.call("voice/patterns/delete", {"id": p["id"]})
        assert (await d.call("voice/understand", {"text": "engage backup"}))["intent"] == "unknown"
        with pytest.raises(RpcError) as e:
            await d.call("voice/patterns/delete", {"id": p["id"]})
        assert e.value.code == -32001


async def test_conversations_and_errors(tmp_path: Path) -> None:
    async with daemon(tmp_path / "d") as d:
        c = await d.call("voice/conversations/start", {"language": "ko"})
        assert c["status"] == "active" and c["language"] == "ko" and c["turnCount"] == 0
        await text(d, "설정 열기", c["id"])
        listed = await d.call("voice/conversations/list", {})
        assert listed["conversations"][0]["id"] == c["id"] and listed["conversations"][0]["turnCount"] == 2
        ended = await d.call("voice/conversations/end", {"id": c["id"]})
        assert ended["status"] == "ended"
        with pytest.raises(RpcError) as e:
            await text(d, "open settings", c["id"])
        assert e.value.code == -32009
        with pytest.raises(RpcError) as e:
            await d.call("voice/process", {"audio": {"path": str(tmp_path / "missing.wav")}, "speak": False})
        assert e.value.code == -32001
        errors = [n["params"] for n in d.notifications if n["method"] == "voice/event" and n["params"]["type"] == "error"]
        assert errors[-1]["code"] == "not_found"
        with pytest.raises(RpcError) as e:  # nothing listens there: the offline answer (test_voice_download.py)
            await d.call("voice/models/download", {"url": "http://127.0.0.1:9/ggml-base.bin"})
        assert e.value.code == -32011 and "offline" in str(e.value)

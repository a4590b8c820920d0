"""providers/detect and providers/pull: a local Ollama found by `/api/tags`, models pulled with
NDJSON progress, through the real session and router in process, against the fixture server
on 127.0.0.1 (tests/support/http_fixture.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from sidecar.llm.local import DEFAULT_OLLAMA, candidates, ollama_host_url
from tests.harness import InProcessDaemon, RpcError
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response, ndjson_lines
from tests.test_chat import daemon_with_chat

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "llm"
NDJSON = {"content-type": "application/x-ndjson"}
TAGS = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
                   {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 4683087332}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def progress(daemon: InProcessDaemon) -> list[dict[str, Any]]:
    return [n["params"] for n in daemon.notifications if n["method"] == "providers/pullProgress"]


async def ollama(daemon: InProcessDaemon, server: HttpFixtureServer, pid: str = "local") -> None:
    await daemon.call("providers/configure", {"id": pid, "kind": "ollama", "model": "llama3.2",
                                              "baseUrl": server.url})


def test_ollama_host_is_read_as_the_ollama_cli_reads_it() -> None:
    assert ollama_host_url("0.0.0.0") == "http://127.0.0.1:11434"
    assert ollama_host_url("0.0.0.0:8080") == "http://127.0.0.1:8080"
    assert ollama_host_url("https://ollama.example.com") == "https://ollama.example.com:443"
    assert ollama_host_url("http://[::1]:11434/") == "http://[::1]:11434"
    assert ollama_host_url("") is None and ollama_host_url("ftp://x") is None
    order = candidates([("a", "http://127.0.0.1:5000/"), ("b", "http://127.0.0.1:5000")], "http://h:1/",
                       env={"OLLAMA_HOST": "127.0.0.1:7000"})
    assert order == {"http://127.0.0.1:5000": ["a", "b"], "http://127.0.0.1:7000": [], DEFAULT_OLLAMA: [],
                     "http://h:1": []}


async def test_detect_finds_the_configured_ollama_and_probes_the_default(tmp_path: Path,
                                                                         http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/api/tags", Response.json(TAGS))
    async with daemon_with_chat(tmp_path) as daemon:
        await ollama(daemon, http_fixture)
        result = await daemon.call("providers/detect")
        assert result["checked"][0] == http_fixture.url and DEFAULT_OLLAMA in result["checked"]
        mine = [f for f in result["found"] if f["baseUrl"] == http_fixture.url]
        assert len(mine) == 1
        assert mine[0]["models"] == ["llama3.2:latest", "qwen2.5:7b"] and mine[0]["providers"] == ["local"]
        assert mine[0]["latencyMs"] > 0
        assert http_fixture.requests[0].path == "/api/tags"


async def test_detect_a_named_url_and_what_is_not_an_ollama(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    async with daemon_with_chat(tmp_path) as daemon:
        # nothing routed: the fixture answers 404, which is not an Ollama
        result = await daemon.call("providers/detect", {"baseUrl": http_fixture.url + "/"})
        assert http_fixture.url in result["checked"]
        assert all(f["baseUrl"] != http_fixture.url for f in result["found"])
        # JSON, but not the shape of /api/tags
        http_fixture.route("GET", "/api/tags", Response.json({"status": "ok"}))
        result = await daemon.call("providers/detect", {"baseUrl": http_fixture.url})
        assert all(f["baseUrl"] != http_fixture.url for f in result["found"])
        http_fixture.route("GET", "/api/tags", Response.json(TAGS))
        result = await daemon.call("providers/detect", {"baseUrl": http_fixture.url})
        (mine,) = [f for f in result["found"] if f["baseUrl"] == http_fixture.url]
        assert mine["providers"] == [] and len(mine["models"]) == 2
        # an Ollama that does not answer within the probe timeout is not found, and detect returns
        http_fixture.route("GET", "/api/tags", Response.json(TAGS, delay_before=30))
        with anyio.fail_after(10):
            result = await daemon.call("providers/detect", {"baseUrl": http_fixture.url})
        assert all(f["baseUrl"] != http_fixture.url for f in result["found"])
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/detect", {"baseUrl": "file:///etc"})
        assert info.value.error["data"]["path"] == "$.params.baseUrl"


async def test_pull_streams_progress_and_answers_the_result(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/api/pull", Response.from_file(FIXTURES / "ollama_pull.ndjson", chunk_size=97,
                                                               headers=NDJSON, chunked=True))
    async with daemon_with_chat(tmp_path) as daemon:
        await ollama(daemon, http_fixture)
        result = await daemon.call("providers/pull", {"id": "local", "model": "llama3.2"})
        assert result["status"] == "success" and result["model"] == "llama3.2" and result["id"] == "local"
        assert result["bytes"] == 2019393189 and result["totalMs"] > 0
        events = progress(daemon)
        assert [e["seq"] for e in events] == list(range(len(events)))
        statuses = [e["status"] for e in events]
        # every status is sent (progress within one status may be thinned out)
        wanted = list(dict.fromkeys(line["status"] for line in _lines("ollama_pull.ndjson")))
        assert list(dict.fromkeys(statuses)) == wanted
        first_layer = next(e for e in events if e["status"] == "pulling dde5aa3fc5ff")
        assert first_layer["total"] == 2019377376 and first_layer["digest"].startswith("sha256:dde5")
        assert statuses[-1] == "success"
        body = http_fixture.requests[0].json()
        assert body["model"] == "llama3.2" and body["stream"] is True


async def test_pull_errors_answer_provider_error_with_details(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/api/pull",
                       # what Ollama streams for a model that does not exist
                       Response(200, NDJSON, ndjson_lines([{"status": "pulling manifest"},
                                                           {"error": "pull model manifest: file does not exist"}]),
                                chunked=True),
                       Response.json({"error": "model name is required"}, 400),
                       # the stream ends (cleanly) before success
                       Response(200, NDJSON, ndjson_lines([{"status": "pulling manifest"}]), chunked=True),
                       # the connection is cut mid-body
                       Response(200, NDJSON, ndjson_lines([{"status": "pulling manifest"}] * 3), chunked=True,
                                cut_after=1))
    async with daemon_with_chat(tmp_path) as daemon:
        await ollama(daemon, http_fixture)
        await daemon.call("providers/configure", {"id": "claude", "kind": "anthropic", "model": "claude-x",
                                                  "baseUrl": http_fixture.url})
        outcomes, messages = [], []
        for _ in range(4):
            with pytest.raises(RpcError) as info:
                await daemon.call("providers/pull", {"id": "local", "model": "no-such-model"})
            outcomes.append((info.value.kind, info.value.error["data"]["details"]["type"]))
            messages.append(info.value.error["message"])
        assert "file does not exist" in messages[0] and "model name is required" in messages[1]
        assert outcomes == [("provider_error", "ollama_error"), ("provider_error", "bad_request"),
                            ("provider_error", "incomplete_stream"), ("provider_error", "RemoteProtocolError")]
        assert [e["status"] for e in progress(daemon)][:1] == ["pulling manifest"]
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/pull", {"id": "claude", "model": "m"})
        assert info.value.error["data"]["path"] == "$.params.id"
        with pytest.raises(RpcError) as info:
            await daemon.call("providers/pull", {"id": "nobody", "model": "m"})
        assert info.value.kind == "not_found"


async def test_cancel_stops_the_download(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("POST", "/api/pull", Response(200, NDJSON, [
        Chunk(b'{"status":"pulling manifest"}\n'),
        Chunk(b'{"status":"pulling dde5aa3fc5ff","digest":"sha256:dde5","total":2019377376,"completed":0}\n')],
        chunked=True, stall=True))
    async with daemon_with_chat(tmp_path) as daemon:
        await ollama(daemon, http_fixture)
        daemon.send({"jsonrpc": "2.0", "id": 77, "method": "providers/pull",
                     "params": {"id": "local", "model": "llama3.2"}})
        with anyio.fail_after(10):
            while len(progress(daemon)) < 2:
                await anyio.sleep(0.01)
        daemon.notify("$/cancelRequest", {"id": 77})
        with anyio.fail_after(10):
            while 77 not in daemon._answers:
                await anyio.sleep(0.01)
        assert daemon._answers.pop(77)["error"]["code"] == -32800
        (request,) = http_fixture.requests[-1:]
        assert await anyio.to_thread.run_sync(request.wait_disconnected, 5), "Ollama never saw the disconnect"


def _lines(name: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]

"""voice/models/download for real, against the local HTTP fixture server on 127.0.0.1 (no
internet): streaming with progress, checksums, redirects, the size cap, the offline error, cut
connections and cancellation, which all leave no `.part` file behind; and once through the
daemon over JSON-RPC, with its voice/models/progress notifications."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from sidecar.errors import Conflict, InvalidValue, NotFound, ResourceExhausted, Unavailable
from sidecar.http import SharedHttp
from sidecar.voice import download as dl
from tests.harness import RpcError, in_process
from tests.support.http_fixture import Chunk, HttpFixtureServer, Response

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB
BODY = random.Random(7).randbytes(3 * MIB)  # "a few MB"
SHA256 = hashlib.sha256(BODY).hexdigest()
SHA1 = hashlib.sha1(BODY).hexdigest()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's own kind of shared client (follow_redirects=False, as in production)."""
    http = SharedHttp()
    try:
        yield await http.client()
    finally:
        await http.aclose()


def pieces(data: bytes, size: int, delay: float = 0.0) -> list[Chunk]:
    return [Chunk(data[i:i + size], delay) for i in range(0, len(data), size)]


def source(url: str, *, size: int | None = None, sha1: str | None = None, sha256: str | None = None) -> dl.Source:
    return dl.Source("test", url, "ggml-test.bin", size, sha1, sha256)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_downloads_verifies_and_reports_progress(tmp_path: Path, client: httpx.AsyncClient,
                                                       http_fixture: HttpFixtureServer) -> None:
    # 12 writes 60 ms apart: long enough for throttled progress (every 250 ms) to show up
    http_fixture.route("GET", "/m.bin", Response(200, {"content-type": "application/octet-stream"},
                                                 pieces(BODY, 256 * KIB, 0.06)))
    seen: list[tuple[int, int | None]] = []

    async def progress(received: int, total: int | None) -> None:
        seen.append((received, total))

    target = tmp_path / "models" / "ggml-test.bin"
    got = await dl.download(client, source(http_fixture.url + "/m.bin", size=len(BODY), sha1=SHA1, sha256=SHA256),
                            target, progress=progress)
    assert got.path == target and got.bytes == len(BODY) and got.sha256 == SHA256 and not got.already_present
    assert target.read_bytes() == BODY
    assert leftovers(target.parent) == ["ggml-test.bin"]
    assert len(seen) >= 2, seen  # some along the way, one at the end
    received = [r for r, _ in seen]
    assert received == sorted(received) and seen[-1] == (len(BODY), len(BODY))
    assert all(total == len(BODY) for _, total in seen)
    assert http_fixture.requests[0].header("accept-encoding") == "identity"


async def test_a_checksum_mismatch_keeps_nothing(tmp_path: Path, client: httpx.AsyncClient,
                                                 http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/m.bin", Response(200, body=pieces(BODY, MIB)))
    wrong = "0" * 64
    with pytest.raises(InvalidValue) as info:
        await dl.download(client, source(http_fixture.url + "/m.bin", sha256=wrong), tmp_path / "m.bin")
    assert wrong in info.value.message and SHA256 in info.value.message
    assert info.value.details == {"algorithm": "sha256", "expected": wrong, "actual": SHA256}
    with pytest.raises(InvalidValue, match="sha1 expected"):
        await dl.download(client, source(http_fixture.url + "/m.bin", sha1="1" * 40), tmp_path / "m.bin")
    with pytest.raises(InvalidValue, match="expected 5"):  # the catalog's size is checked too
        await dl.download(client, source(http_fixture.url + "/m.bin", size=5), tmp_path / "m.bin")
    assert leftovers(tmp_path) == []


async def test_http_errors(tmp_path: Path, client: httpx.AsyncClient, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/broken", Response(503, body=b"busy"))
    with pytest.raises(NotFound, match="HTTP 404"):
        await dl.download(client, source(http_fixture.url + "/missing.bin"), tmp_path / "m.bin")
    with pytest.raises(Unavailable, match="HTTP 503") as info:
        await dl.download(client, source(http_fixture.url + "/broken"), tmp_path / "m.bin")
    assert info.value.details["status"] == 503  # type: ignore[index]
    assert leftovers(tmp_path) == []


async def test_connection_refused_says_offline(tmp_path: Path, client: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable) as info:
        await dl.download(client, source(f"http://127.0.0.1:{port}/ggml-tiny.bin"), tmp_path / "models" / "m.bin")
    message = info.value.message
    assert "looks offline" in message and "connection refused" in message
    assert "voice.modelPath" in message and str(tmp_path / "models") in message
    assert leftovers(tmp_path / "models") == []


async def test_a_stalled_server_times_out(tmp_path: Path, client: httpx.AsyncClient,
                                          http_fixture: HttpFixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "READ_TIMEOUT", 0.3)
    http_fixture.route("GET", "/stall", Response(200, body=[BODY[:KIB]], chunked=True, stall=True))
    with pytest.raises(Unavailable, match=r"timed out after 1024 bytes\): this machine looks offline"):
        await dl.download(client, source(http_fixture.url + "/stall"), tmp_path / "m.bin")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_cut_connection_keeps_nothing(tmp_path: Path, client: httpx.AsyncClient,
                                              http_fixture: HttpFixtureServer, chunked: bool) -> None:
    http_fixture.route("GET", "/m.bin", Response(200, body=pieces(BODY, 512 * KIB), chunked=chunked, cut_after=3))
    with pytest.raises(Unavailable, match="was cut after") as info:
        await dl.download(client, source(http_fixture.url + "/m.bin"), tmp_path / "m.bin")
    assert 0 < info.value.details["receivedBytes"] < len(BODY)  # type: ignore[index]
    assert leftovers(tmp_path) == []


async def test_too_large(tmp_path: Path, client: httpx.AsyncClient, http_fixture: HttpFixtureServer) -> None:
    # announced up front (over the default 4 GiB cap): refused before a byte of body is read
    http_fixture.route("GET", "/huge", Response(200, {"content-length": str(5 * 1024 ** 3)}, [b"x" * 10],
                                                cut_after=1))
    with pytest.raises(ResourceExhausted, match="limit of 4.0 GiB") as info:
        await dl.download(client, source(http_fixture.url + "/huge"), tmp_path / "m.bin")
    assert info.value.details == {"limit": dl.DEFAULT_MAX_BYTES, "announced": 5 * 1024 ** 3}
    # announced and over a smaller cap
    http_fixture.route("GET", "/m.bin", Response(200, body=pieces(BODY, MIB)))
    with pytest.raises(ResourceExhausted, match="limit of 1.0 MiB"):
        await dl.download(client, source(http_fixture.url + "/m.bin"), tmp_path / "m.bin", max_bytes=MIB)
    # not announced (chunked): stopped once the body passes the cap
    http_fixture.route("GET", "/chunked", Response(200, body=pieces(BODY, 256 * KIB), chunked=True))
    with pytest.raises(ResourceExhausted, match="limit of 1.0 MiB"):
        await dl.download(client, source(http_fixture.url + "/chunked"), tmp_path / "m.bin", max_bytes=MIB)
    assert leftovers(tmp_path) == []


async def test_redirects(tmp_path: Path, client: httpx.AsyncClient, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/resolve/main/m.bin", Response(302, {"location": "/cdn/m.bin"}))
    http_fixture.route("GET", "/cdn/m.bin", Response(200, body=pieces(BODY, MIB)))
    got = await dl.download(client, source(http_fixture.url + "/resolve/main/m.bin", sha256=SHA256),
                            tmp_path / "m.bin")
    assert got.bytes == len(BODY) and (tmp_path / "m.bin").read_bytes() == BODY
    assert [r.path for r in http_fixture.requests] == ["/resolve/main/m.bin", "/cdn/m.bin"]
    # a redirect off http/https is refused; so is a loop (at most 5 hops)
    http_fixture.route("GET", "/to-ftp", Response(301, {"location": "ftp://127.0.0.1/m.bin"}))
    with pytest.raises(InvalidValue, match="only http and https"):
        await dl.download(client, source(http_fixture.url + "/to-ftp"), tmp_path / "n.bin")
    http_fixture.route("GET", "/loop", Response(307, {"location": "/loop"}))
    with pytest.raises(Unavailable, match="more than 5 redirects"):
        await dl.download(client, source(http_fixture.url + "/loop"), tmp_path / "n.bin")
    assert http_fixture.calls("GET", "/loop") == 6
    assert leftovers(tmp_path) == ["m.bin"]


async def test_cancellation_mid_download_keeps_nothing(tmp_path: Path, client: httpx.AsyncClient,
                                                       http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/slow", Response(200, body=pieces(BODY, 64 * KIB, 0.1), chunked=True))
    target = tmp_path / "m.bin"
    seen: list[int] = []

    async def progress(received: int, total: int | None) -> None:
        seen.append(received)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: dl.download(client, source(http_fixture.url + "/slow"), target,
                                              progress=progress))
            with anyio.fail_after(10):
                while not seen:  # mid-stream: the .part exists and holds some bytes
                    await anyio.sleep(0.01)
            assert (tmp_path / "m.bin.part").exists()
            scope.cancel()
    assert scope.cancelled_caught
    assert leftovers(tmp_path) == []
    (request,) = http_fixture.requests
    assert await anyio.to_thread.run_sync(request.wait_disconnected, 5), "the server never saw the disconnect"


async def test_an_already_present_model_is_not_fetched_again(tmp_path: Path, client: httpx.AsyncClient,
                                                             http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/m.bin", Response(200, body=pieces(BODY, MIB)))
    src = source(http_fixture.url + "/m.bin", size=len(BODY), sha1=SHA1)
    first = await dl.download(client, src, tmp_path / "m.bin")
    again = await dl.download(client, src, tmp_path / "m.bin")
    assert not first.already_present and again.already_present
    assert (again.bytes, again.sha256) == (len(BODY), SHA256)
    assert http_fixture.calls("GET", "/m.bin") == 1
    # a damaged copy (same size, other bytes) is replaced
    (tmp_path / "m.bin").write_bytes(b"\0" * len(BODY))
    fixed = await dl.download(client, src, tmp_path / "m.bin")
    assert not fixed.already_present and (tmp_path / "m.bin").read_bytes() == BODY
    assert http_fixture.calls("GET", "/m.bin") == 2


async def test_one_download_per_target_at_a_time(tmp_path: Path, client: httpx.AsyncClient,
                                                 http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/slow", Response(200, body=pieces(BODY[:MIB], 64 * KIB, 0.02), chunked=True))
    errors: list[Conflict] = []
    in_progress: set[Path] = set()  # one daemon's

    async def one() -> None:
        try:
            await dl.download(client, source(http_fixture.url + "/slow"), tmp_path / "m.bin",
                              in_progress=in_progress)
        except Conflict as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    assert len(errors) == 1 and "already being downloaded" in errors[0].message
    assert (tmp_path / "m.bin").read_bytes() == BODY[:MIB] and leftovers(tmp_path) == ["m.bin"]


def test_sources_and_the_catalog() -> None:
    tiny = dl.source_for("tiny.en", None)
    assert tiny.url == "https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-tiny.en.bin"
    assert tiny.file_name == "ggml-tiny.en.bin" and tiny.sha1 == "c78c86eb1a8faa21b369bcd33207cc90d64ae9df"
    assert {"tiny", "tiny.en", "base", "base.en", "small", "small.en"} <= set(dl.CATALOG)
    with pytest.raises(NotFound) as info:
        dl.source_for("huge", None)
    assert "tiny.en" in info.value.message and "small.en" in info.value.message
    for name, url in ((None, None), ("tiny", "https://example.invalid/x.bin")):
        with pytest.raises(InvalidValue, match="exactly one of name"):
            dl.source_for(name, url)
    for url in ("ftp://host/x.bin", "file:///etc/passwd", "https:///x.bin", "not a url"):
        with pytest.raises(InvalidValue, match="only http and https"):
            dl.source_for(None, url)
    for url in ("http://[::1/x.bin", "http://127.0.0.1:99999/x.bin"):
        with pytest.raises(InvalidValue, match="is not a URL"):
            dl.source_for(None, url)
    for url in ("https://host/", "https://host/.hidden", "https://host/a%20b.bin", "https://host/x.bin.part"):
        with pytest.raises(InvalidValue, match="give fileName"):
            dl.source_for(None, url)
    with pytest.raises(InvalidValue, match="go with url"):
        dl.source_for("tiny", None, sha256="a" * 64)
    plain = dl.source_for(None, "https://host/path/model.bin?x=1", "A" * 64)
    assert (plain.name, plain.file_name, plain.sha256) == ("model.bin", "model.bin", "a" * 64)
    assert dl.source_for(None, "https://host/path/", file_name="mine.bin").file_name == "mine.bin"


# ---- through the daemon, over JSON-RPC ----------------------------------------------------------------

async def test_download_over_json_rpc(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/ggml-mine.bin", Response(200, body=pieces(BODY, 256 * KIB, 0.05)))
    async with in_process(tmp_path / "d") as d:
        result = await d.call("voice/models/download", {"url": http_fixture.url + "/ggml-mine.bin",
                                                        "sha256": SHA256}, timeout=30)
        path = tmp_path / "d" / "voice" / "models" / "ggml-mine.bin"
        assert result["path"] == str(path) and path.read_bytes() == BODY
        assert result["bytes"] == len(BODY) and result["sha256"] == SHA256 and result["alreadyPresent"] is False
        assert result["seconds"] > 0
        progress = [n["params"] for n in d.notifications if n["method"] == "voice/models/progress"]
        assert len(progress) >= 2 and progress[-1]["receivedBytes"] == len(BODY)
        assert all(p["name"] == "ggml-mine.bin" and p["totalBytes"] == len(BODY) for p in progress)
        assert [p["seq"] for p in progress] == list(range(len(progress)))
        received = [p["receivedBytes"] for p in progress]
        assert received == sorted(received)
        again = await d.call("voice/models/download", {"url": http_fixture.url + "/ggml-mine.bin",
                                                       "sha256": SHA256})
        assert again["alreadyPresent"] is True and http_fixture.calls("GET", "/ggml-mine.bin") == 1

        with pytest.raises(RpcError) as info:
            await d.call("voice/models/download", {"name": "huge"})
        assert info.value.kind == "not_found" and "tiny.en" in str(info.value)
        with pytest.raises(RpcError) as info:
            await d.call("voice/models/download", {"name": "tiny", "url": http_fixture.url + "/x.bin"})
        assert info.value.code == -32602 and "exactly one of name" in str(info.value)
        with pytest.raises(RpcError) as info:
            await d.call("voice/models/download", {"url": "ftp://127.0.0.1/x.bin"})
        assert info.value.code == -32602 and info.value.error["data"]["path"] == "$.params.url"


async def test_cancel_request_over_json_rpc_keeps_nothing(tmp_path: Path, http_fixture: HttpFixtureServer) -> None:
    http_fixture.route("GET", "/ggml-slow.bin", Response(200, body=pieces(BODY, 64 * KIB, 0.1), chunked=True))
    async with in_process(tmp_path / "d") as d:
        d.send({"jsonrpc": "2.0", "id": 91, "method": "voice/models/download",
                "params": {"url": http_fixture.url + "/ggml-slow.bin"}})
        with anyio.fail_after(10):
            while not any(n["method"] == "voice/models/progress" for n in d.notifications):
                await anyio.sleep(0.01)
        d.notify("$/cancelRequest", {"id": 91})
        with anyio.fail_after(10):
            while 91 not in d._answers:
                await anyio.sleep(0.01)
        assert d._answers.pop(91)["error"]["code"] == -32800
        assert leftovers(tmp_path / "d" / "voice" / "models") == []

"""A local Ollama: finding one (`providers/detect`) and pulling models into it (`providers/pull`).

Detection asks `GET /api/tags` at each candidate base URL, all at once, each within
`DETECT_TIMEOUT` seconds: the configured Ollama providers' base URLs, `$OLLAMA_HOST` (Ollama's
own variable: `host`, `host:port` or a URL), the default `http://127.0.0.1:11434`, and one the
caller names. An answer that is JSON with a `models` list is an Ollama.

Pulling posts `/api/pull {"model", "stream": true}` and reads its NDJSON progress lines
(`{"status": "pulling <digest>", "digest", "total", "completed"}` ...
`{"status": "success"}`; a failure is `{"error": "..."}`, in the stream or as the body of an
HTTP error). Progress goes out as events: every change of status, and within one status at
most one every `PROGRESS_INTERVAL` seconds (Ollama writes a line per few kilobytes). Cancelling
closes the HTTP stream, which makes Ollama stop the download (it resumes from the layers it
kept on the next pull).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from protocol import llm as p
from sidecar.errors import ProviderError
from sidecar.llm.providers import adapter_for
from sidecar.llm.providers.base import (
    CallFailed,
    ProviderConfig,
    classify_status,
    classify_transport,
    decode_json,
    parse_retry_after,
    redact,
)
from sidecar.llm.sse import aiter_ndjson_lines

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("sidecar.llm")

DEFAULT_OLLAMA = "http://127.0.0.1:11434"
OLLAMA_PORT = 11434
#: seconds one probe of providers/detect may take (connect and answer)
DETECT_TIMEOUT = 2.0
#: within one status, at most one progress event this often
PROGRESS_INTERVAL = 0.1

EmitProgress = Callable[[p.PullProgress], Awaitable[None]]


def ollama_host_url(value: str) -> str | None:
    """`$OLLAMA_HOST` as a base URL: `0.0.0.0` (listen everywhere) is reached on 127.0.0.1, a
    missing scheme is http and a missing port 11434 (as the Ollama CLI reads it)."""
    value = value.strip()
    if not value:
        return None
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (OLLAMA_PORT if parts.scheme == "http" else 443)
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


def candidates(configured: list[tuple[str, str]], extra: str | None,
               env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Base URL -> ids of the configured providers using it, in probing order: the configured
    ones, `$OLLAMA_HOST`, the default, then `extra`."""
    env = dict(os.environ) if env is None else env
    out: dict[str, list[str]] = {}
    for provider_id, base_url in configured:
        out.setdefault(base_url.rstrip("/"), []).append(provider_id)
    from_env = ollama_host_url(env.get("OLLAMA_HOST", ""))
    for url in (from_env, DEFAULT_OLLAMA, extra.rstrip("/") if extra else None):
        if url:
            out.setdefault(url, [])
    return out


async def probe(client: httpx.AsyncClient, base_url: str) -> tuple[list[str], float] | None:
    """(models, latency ms) when an Ollama answers `/api/tags` at `base_url`, else None."""
    import httpx

    started = time.perf_counter()
    try:
        with anyio.fail_after(DETECT_TIMEOUT):
            response = await client.get(base_url + "/api/tags", timeout=httpx.Timeout(DETECT_TIMEOUT))
    except (TimeoutError, httpx.HTTPError) as exc:
        log.debug("detect: nothing at %s (%s)", base_url, type(exc).__name__)
        return None
    latency = round((time.perf_counter() - started) * 1000, 3)
    if response.status_code != 200:
        log.debug("detect: %s answered HTTP %d", base_url, response.status_code)
        return None
    try:
        data = decode_json(response.content, "the model list")
    except CallFailed:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return None
    return adapter_for("ollama").parse_models(data), latency


async def detect(client: httpx.AsyncClient, urls: dict[str, list[str]]) -> p.ProviderDetectResult:
    results: dict[str, tuple[list[str], float] | None] = {}

    async def one(url: str) -> None:
        results[url] = await probe(client, url)

    async with anyio.create_task_group() as tg:
        for url in urls:
            tg.start_soon(one, url)
    found = []
    for url, ids in urls.items():
        hit = results.get(url)
        if hit is not None:
            found.append(p.DetectedOllama(baseUrl=url, models=hit[0], latencyMs=hit[1], providers=ids))
    return p.ProviderDetectResult(found=found, checked=list(urls))


async def pull(client: httpx.AsyncClient, config: ProviderConfig, api_key: str | None, model: str,
               emit: EmitProgress) -> p.ProviderPullResult:
    """Pull `model` into the Ollama of `config`, streaming progress; raises ProviderError /
    RateLimited (with details) when Ollama refuses or the stream breaks."""
    import httpx

    adapter = adapter_for("ollama")
    started = time.perf_counter()
    headers = adapter.headers(config, api_key)
    secrets = (api_key,) if api_key else ()
    sizes: dict[str, int] = {}
    last_status: str | None = None
    last_sent = 0.0
    try:
        async with client.stream("POST", config.base_url + "/api/pull", headers=headers,
                                 json={"model": model, "name": model, "stream": True}) as response:
            if response.status_code >= 400:
                error_type, message = adapter.parse_error(await response.aread())
                raise classify_status(response.status_code, error_type, redact(message, secrets),
                                      parse_retry_after(response.headers)).to_error(config.id)
            async for line in aiter_ndjson_lines(response.aiter_bytes()):
                data = decode_json(line, "a progress line")
                if not isinstance(data, dict):
                    continue
                if data.get("error"):
                    raise ProviderError(f"Ollama could not pull {model}: {redact(str(data['error']), secrets)}",
                                        provider=config.id, status=response.status_code, type="ollama_error",
                                        retryAfter=None)
                status = str(data.get("status") or "")
                digest = data.get("digest")
                total = _int(data.get("total"))
                if digest and total is not None:
                    sizes[str(digest)] = total
                now = time.perf_counter()
                if status != last_status or now - last_sent >= PROGRESS_INTERVAL:
                    last_status, last_sent = status, now
                    await emit(p.PullProgress(status=status, digest=str(digest) if digest else None, total=total,
                                              completed=_int(data.get("completed"))))
    except CallFailed as exc:
        raise exc.to_error(config.id) from None
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise classify_transport(exc).to_error(config.id) from None
    if last_status != "success":
        raise ProviderError(f"Ollama's pull of {model} ended before it reported success"
                            + (f" (last: {last_status})" if last_status else ""),
                            provider=config.id, status=200, type="incomplete_stream", retryAfter=None)
    ms = round((time.perf_counter() - started) * 1000, 3)
    log.info("provider %s: pulled %s (%d bytes) in %.0f ms", config.id, model, sum(sizes.values()), ms)
    return p.ProviderPullResult(id=config.id, model=model, status=last_status, totalMs=ms, bytes=sum(sizes.values()))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

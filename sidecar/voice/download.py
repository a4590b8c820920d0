"""Fetching one speech-model file over HTTP, safely: the catalog of known models, and
`download`, which streams a URL into `<target>.part` while hashing it, checks size and
checksum, then renames it into place.

Nothing here runs unless the user asks (voice/models/download): the daemon never fetches a
model on its own. Whatever goes wrong, and on cancellation, the `.part` file is removed and
no target appears, so a model file on disk is always a complete, verified one.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

import anyio

from sidecar.errors import Conflict, InvalidValue, NotFound, ResourceExhausted, SidecarError, Unavailable
from sidecar.sizes import human_bytes

if TYPE_CHECKING:
    import httpx

#: bytes per write to the .part file (and per read of a file already present)
CHUNK = 1024 * 1024
#: the default cap on one download (the largest whisper.cpp models are ~3 GiB)
DEFAULT_MAX_BYTES = 4 * 1024 ** 3
MAX_REDIRECTS = 5
#: seconds to connect, and with no byte arriving mid-body, before giving up
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 30.0
PROGRESS_INTERVAL = 0.25

#: (bytesReceived, totalBytes or None)
Progress = Callable[[int, int | None], Awaitable[None]]

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_HF = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main/"


@dataclass(frozen=True, slots=True)
class Source:
    """What to fetch, and what the result must be."""

    #: the catalog name, or the file name for a plain URL (what progress reports name)
    name: str
    url: str
    file_name: str
    size: int | None = None
    sha1: str | None = None
    sha256: str | None = None


def _ggml(name: str, size: int, sha1: str) -> Source:
    return Source(name, f"{_HF}ggml-{name}.bin", f"ggml-{name}.bin", size, sha1)


# SHA-1 sums: whisper.cpp's models/README.md ("Available models"). Sizes: the files' byte
# counts on Hugging Face as several independent model catalogs publish them (they agree).
CATALOG: dict[str, Source] = {s.name: s for s in (
    _ggml("tiny", 77_691_713, "bd577a113a864445d4c299885e0cb97d4ba92b5f"),
    _ggml("tiny.en", 77_704_715, "c78c86eb1a8faa21b369bcd33207cc90d64ae9df"),
    _ggml("base", 147_951_465, "465707469ff3a37a2b9b8d8f89f2f99de7299dac"),
    _ggml("base.en", 147_964_211, "137c40403d78fd54d454da0f9bd998f78703390c"),
    _ggml("small", 487_601_967, "55356645c2b361a969dfd0ef2c5a50d530afd8d5"),
    _ggml("small.en", 487_614_201, "db8a495a91d927739e50b3fc1cc4c6b8f6c2d022"),
)}


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    bytes: int
    sha256: str
    seconds: float
    #: the target was already there with the right checksum: nothing was fetched
    already_present: bool = False


def source_for(name: str | None, url: str | None, sha256: str | None = None,
               file_name: str | None = None) -> Source:
    """The Source for params: exactly one of a catalog `name` and a `url` (which may carry
    `sha256` and `file_name`)."""
    if (name is None) == (url is None):
        raise InvalidValue("give exactly one of name (a catalog model) and url", "$.params.name")
    if name is not None:
        if sha256 is not None or file_name is not None:
            raise InvalidValue("sha256 and fileName go with url; a catalog model has its own", "$.params.sha256")
        found = CATALOG.get(name)
        if found is None:
            raise NotFound(f"no speech model {name!r} in the catalog; known: {', '.join(CATALOG)}",
                           name=name, known=list(CATALOG))
        return found
    assert url is not None
    parsed = _check_url(url, "$.params.url")
    chosen = file_name or parsed.path.rsplit("/", 1)[-1]
    # the same rule as the protocol's fileName: a plain name, never a path or a hidden file
    if not _FILE_NAME.fullmatch(chosen) or chosen.endswith(".part"):
        raise InvalidValue(f"{chosen!r} is not a usable model file name; give fileName (letters, digits, . _ -)",
                           "$.params.fileName")
    return Source(chosen, url, chosen, sha256=sha256.lower() if sha256 else None)


def _check_url(url: str, path: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise InvalidValue(f"{url!r} is not a URL", path) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(f"only http and https URLs can be downloaded, not {url!r}", path)
    return parts


def offline_error(url: str, target: Path, why: str) -> Unavailable:
    return Unavailable(f"could not reach {_host(url)} ({why}): this machine looks offline. To use a model without "
                       f"a download, copy a ggml model file (whisper.cpp) onto this machine, e.g. to {target}, and "
                       f"set voice.modelPath to it", url=url, modelsDir=str(target.parent), hint="voice.modelPath")


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


async def download(client: httpx.AsyncClient, source: Source, target: Path, *,
                   max_bytes: int = DEFAULT_MAX_BYTES, progress: Progress | None = None,
                   in_progress: set[Path] | None = None) -> Downloaded:
    """Fetch `source` to `target` (atomically: via `<target>.part`), verified against the
    source's size and checksums. A target already there with the right checksum is kept.
    `in_progress`: the targets the caller (a daemon's voice service) is downloading now; one of
    them asked again answers `conflict`."""
    started = time.perf_counter()
    _check_url(source.url, "$.params.url")
    busy = in_progress if in_progress is not None else set()
    if target in busy:  # two writers of one .part would corrupt it
        raise Conflict(f"{target.name} is already being downloaded", path=str(target))
    busy.add(target)
    try:
        if source.sha1 or source.sha256:
            present = await anyio.to_thread.run_sync(_verified_copy, target, source)
            if present is not None:
                return Downloaded(target, present[0], present[1], _since(started), already_present=True)
        await anyio.to_thread.run_sync(lambda: target.parent.mkdir(parents=True, exist_ok=True))
        size, sha256 = await _fetch(client, source, target, max_bytes, progress)
        return Downloaded(target, size, sha256, _since(started))
    finally:
        busy.discard(target)


async def _fetch(client: httpx.AsyncClient, source: Source, target: Path, max_bytes: int,
                 progress: Progress | None) -> tuple[int, str]:
    import httpx

    part = target.with_name(target.name + ".part")
    sink: _Sink | None = None
    received = 0
    try:
        response = await _open(client, source.url)
        try:
            total = _content_length(response) or source.size
            if total is not None and total > max_bytes:
                raise _too_large(max_bytes, total)
            sink = await anyio.to_thread.run_sync(_Sink, part, source.sha1 is not None)
            last = time.monotonic()
            # Read what the network gives (so progress moves on a slow link too), write in
            # CHUNK pieces: one worker-thread hop per MiB, not per socket read.
            pending = bytearray()
            async for data in response.aiter_bytes():
                received += len(data)
                if received > max_bytes:
                    raise _too_large(max_bytes, None)
                pending += data
                if len(pending) >= CHUNK:
                    full, pending = pending, bytearray()
                    await anyio.to_thread.run_sync(sink.write, full)
                if progress is not None and time.monotonic() - last >= PROGRESS_INTERVAL:
                    last = time.monotonic()
                    await progress(received, total)
            if pending:
                await anyio.to_thread.run_sync(sink.write, pending)
        finally:
            # shielded: on cancellation the connection must still be released, not leaked
            with anyio.move_on_after(5, shield=True):
                await response.aclose()
        assert sink is not None
        if progress is not None:
            await progress(received, total)
        digests = await anyio.to_thread.run_sync(sink.finish)
        _verify(source, received, digests)
        await anyio.to_thread.run_sync(os.replace, part, target)
        return received, digests[0]
    except SidecarError:
        raise
    except httpx.TimeoutException:
        raise offline_error(source.url, target, f"timed out after {received} bytes" if received else
                            "timed out") from None
    except httpx.ConnectError as exc:
        raise offline_error(source.url, target, _connect_reason(exc)) from None
    except (httpx.TransportError, httpx.StreamError):
        raise Unavailable(f"the connection to {_host(source.url)} was cut after {received} bytes; try again",
                          url=source.url, receivedBytes=received) from None
    except httpx.InvalidURL:
        raise InvalidValue(f"{source.url!r} is not a URL that can be fetched", "$.params.url") from None
    except httpx.HTTPError as exc:  # anything else httpx reports (decoding, ...): never an internal error
        raise Unavailable(f"fetching the model from {_host(source.url)} failed ({type(exc).__name__})",
                          url=source.url) from None
    finally:
        # every way out but success (errors, cancellation) leaves no partial file behind;
        # after success the rename has already taken it
        if sink is not None:
            sink.close()
        part.unlink(missing_ok=True)


async def _open(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """The response to GET `url`, following at most MAX_REDIRECTS redirects ourselves so
    every hop is checked to be http or https."""
    import httpx

    # identity: the checksum is of the file itself, and Content-Length must count its bytes
    headers = {"accept-encoding": "identity"}
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request("GET", url, headers=headers, timeout=timeout)
        response = await client.send(request, stream=True, follow_redirects=False)
        if response.is_redirect:
            await response.aclose()
            location = response.headers.get("location")
            if not location:
                raise Unavailable(f"{_host(url)} answered HTTP {response.status_code} with nowhere to go", url=url)
            url = str(response.url.join(location))
            _check_url(url, "$.params.url")
            continue
        if response.status_code == 404:
            await response.aclose()
            raise NotFound(f"{url} does not exist (HTTP 404)", url=url, status=404)
        if response.status_code >= 400:
            await response.aclose()
            raise Unavailable(f"{_host(url)} answered HTTP {response.status_code} for the model", url=url,
                              status=response.status_code)
        return response
    raise Unavailable(f"more than {MAX_REDIRECTS} redirects fetching the model", url=url)


class _Sink:
    """The .part file and the running digests; every call runs in a worker thread."""

    def __init__(self, part: Path, sha1: bool) -> None:
        self.file: IO[bytes] = part.open("wb")
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1() if sha1 else None

    def write(self, chunk: bytes | bytearray) -> None:
        self.file.write(chunk)
        self.sha256.update(chunk)
        if self.sha1 is not None:
            self.sha1.update(chunk)

    def finish(self) -> tuple[str, str | None]:
        self.file.flush()
        os.fsync(self.file.fileno())  # on disk before the rename makes it the model
        self.file.close()
        return self.sha256.hexdigest(), self.sha1.hexdigest() if self.sha1 else None

    def close(self) -> None:
        self.file.close()


def _verify(source: Source, received: int, digests: tuple[str, str | None]) -> None:
    sha256, sha1 = digests
    if source.size is not None and received != source.size:
        raise InvalidValue(f"the download of {source.name} has {received} bytes; expected {source.size}",
                           "$.params", expected=source.size, actual=received)
    for algorithm, expected, actual in (("sha256", source.sha256, sha256), ("sha1", source.sha1, sha1)):
        if expected is not None and actual != expected:
            raise InvalidValue(f"checksum mismatch for {source.name}: {algorithm} expected {expected}, got {actual}; "
                               "the file was not kept", "$.params.sha256" if algorithm == "sha256" else "$.params.name",
                               algorithm=algorithm, expected=expected, actual=actual)


def _verified_copy(target: Path, source: Source) -> tuple[int, str] | None:
    """(bytes, sha256) of `target` if it is already the expected file, else None."""
    try:
        if not target.is_file() or (source.size is not None and target.stat().st_size != source.size):
            return None
        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
        size = 0
        with target.open("rb") as f:
            while chunk := f.read(CHUNK):
                size += len(chunk)
                sha256.update(chunk)
                sha1.update(chunk)
    except OSError:
        return None
    if (source.sha256 and sha256.hexdigest() != source.sha256) or (source.sha1 and sha1.hexdigest() != source.sha1):
        return None
    return size, sha256.hexdigest()


def _content_length(response: httpx.Response) -> int | None:
    try:
        value = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _too_large(limit: int, announced: int | None) -> ResourceExhausted:
    said = f" (the server announced {human_bytes(announced)})" if announced is not None else ""
    return ResourceExhausted(f"the model is larger than the download limit of {human_bytes(limit)}{said}",
                             limit=limit, announced=announced)


def _connect_reason(exc: BaseException) -> str:
    """What the cause chain says (httpx wraps the OS error, sometimes twice)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "the name could not be resolved"
        seen = seen.__cause__ or seen.__context__
    return "could not connect"


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)

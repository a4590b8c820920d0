"""Framing: the FrameDecoder on arbitrary chunkings, and both framings end to end."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.server.framing import CONTENT_LENGTH, NDJSON, FrameDecoder, FrameError, frame
from tests.conftest import serve_argv

LIMIT = 256

# message payloads as a client would send them: JSON text without newlines
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
payloads = json_values.map(msgspec.json.encode).filter(lambda p: 0 < len(p) <= LIMIT)


def decode_all(decoder: FrameDecoder, chunks: Iterable[bytes]) -> list[bytes | FrameError]:
    out: list[bytes | FrameError] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


# ---- arbitrary chunking -------------------------------------------------------


@given(st.lists(payloads, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=12),
       st.sampled_from([NDJSON, CONTENT_LENGTH]))
def test_any_chunking_yields_the_same_messages(messages: list[bytes], cuts: list[int], framing: str) -> None:
    stream = b"".join(frame(m, framing) for m in messages)
    decoder = FrameDecoder(LIMIT)
    assert decode_all(decoder, split(stream, cuts)) == messages
    assert decoder.framing == framing


@given(st.lists(payloads, min_size=1, max_size=4))
def test_byte_at_a_time(messages: list[bytes]) -> None:
    stream = b"".join(frame(m, CONTENT_LENGTH) for m in messages)
    assert decode_all(FrameDecoder(LIMIT), (stream[i:i + 1] for i in range(len(stream)))) == messages


def test_ndjson_tolerates_crlf_blank_lines_and_leading_whitespace() -> None:
    stream = b"\r\n  \n" + b'{"a":1}\r\n' + b"\n\n" + b'  [1]  \n'
    decoder = FrameDecoder(LIMIT)
    assert decode_all(decoder, [stream]) == [b'{"a":1}', b"[1]"]
    assert decoder.framing == NDJSON


# ---- Content-Length detection -------------------------------------------------


@pytest.mark.parametrize(("lead", "cut"), [(b"", 1), (b"", 4), (b"", 11), (b"", 14), (b"  \r\n", 15)])
def test_content_length_detected_when_the_header_is_split(lead: bytes, cut: int) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"x"}'
    stream = lead + b"CONTENT-length: %d\r\n\r\n%s" % (len(body), body)
    cut += len(lead)
    decoder = FrameDecoder(LIMIT)
    assert list(decoder.feed(stream[:cut])) == []
    assert decoder.framing in (None, CONTENT_LENGTH)  # undecided while it could still be a header
    assert list(decoder.feed(stream[cut:])) == [body]
    assert decoder.framing == CONTENT_LENGTH


def test_other_headers_and_case_are_accepted() -> None:
    body = b"[1,2]"
    stream = b"content-length:5\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + body
    assert decode_all(FrameDecoder(LIMIT), [stream]) == [body]


def test_header_split_inside_the_terminator() -> None:
    decoder = FrameDecoder(LIMIT)
    assert list(decoder.feed(b"Content-Length: 2\r\n\r")) == []
    assert list(decoder.feed(b"\n{}")) == [b"{}"]


def test_ndjson_detected_from_a_json_start() -> None:
    decoder = FrameDecoder(LIMIT)
    assert list(decoder.feed(b"{")) == []
    assert decoder.framing == NDJSON


# ---- oversized messages -------------------------------------------------------


@given(st.integers(LIMIT + 1, 4 * LIMIT), st.lists(st.integers(0, 10_000), max_size=8),
       st.sampled_from([NDJSON, CONTENT_LENGTH]))
def test_oversized_message_gives_one_error_and_the_next_decodes(size: int, cuts: list[int], framing: str) -> None:
    big = b'"' + b"x" * (size - 2) + b'"'
    after = b'{"next":true}'
    stream = frame(b"[0]", framing) + frame(big, framing) + frame(after, framing)
    out = decode_all(FrameDecoder(LIMIT), split(stream, cuts))
    assert out == [b"[0]", FrameError("oversized", size), after] or (
        # ndjson sees a partial line pass the limit before its end: the size is what it had seen
        framing == NDJSON and len(out) == 3 and out[0] == b"[0]" and out[2] == after
        and isinstance(out[1], FrameError) and out[1].kind == "oversized" and out[1].size > LIMIT
    )


def test_message_exactly_at_the_limit_passes() -> None:
    body = b'"' + b"y" * (LIMIT - 2) + b'"'
    for framing in (NDJSON, CONTENT_LENGTH):
        assert decode_all(FrameDecoder(LIMIT), [frame(body, framing)]) == [body]


def test_ndjson_message_at_the_limit_with_crlf_split_before_newline() -> None:
    body = b'"' + b"y" * (LIMIT - 2) + b'"'
    decoder = FrameDecoder(LIMIT)
    assert decode_all(decoder, [body + b"\r", b"\n", b"[1]\n"]) == [body, b"[1]"]


# ---- junk headers resynchronise -------------------------------------------------


def test_junk_header_resyncs_to_the_next_content_length() -> None:
    body = b'{"ok":1}'
    good = frame(body, CONTENT_LENGTH)
    stream = good + b"Content-Length: banana\r\n\r\njunk junk" + good
    assert decode_all(FrameDecoder(LIMIT), [stream]) == [body, FrameError("bad_header"), body]


def test_junk_without_any_header_end_resyncs() -> None:
    body = b"[true]"
    good = frame(body, CONTENT_LENGTH)
    junk = b"\x00garbage" * 2000  # longer than any header, no blank line
    out = decode_all(FrameDecoder(LIMIT), [good, junk, good])
    assert out[0] == body and out[-1] == body
    assert out[1:-1] and all(isinstance(e, FrameError) and e.kind == "bad_header" for e in out[1:-1])


@given(st.binary(max_size=64).filter(lambda b: b"content-length:" not in b.lower() and b"\r\n\r\n" not in b),
       st.lists(st.integers(0, 1000), max_size=6))
def test_junk_line_between_messages_costs_one_error(junk: bytes, cuts: list[int]) -> None:
    body = b'{"n":2}'
    good = frame(body, CONTENT_LENGTH)
    stream = good + b"X-" + junk + b"\r\n\r\n" + good
    out = decode_all(FrameDecoder(LIMIT), split(stream, cuts))
    assert out[0] == body and out[-1] == body
    assert out[1:-1] == [FrameError("bad_header")]


def test_negative_or_missing_length_is_a_bad_header() -> None:
    for header in (b"Content-Length: -1\r\n\r\n", b"Content-Type: x\r\n\r\n"):
        out = decode_all(FrameDecoder(LIMIT), [frame(b"1", CONTENT_LENGTH), header, frame(b"2", CONTENT_LENGTH)])
        assert out == [b"1", FrameError("bad_header"), b"2"]


# ---- end to end ---------------------------------------------------------------


def _request(id_: int, method: str, params: object = None) -> bytes:
    message: dict[str, object] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return msgspec.json.encode(message)


def _raw_session(data_dir: Path, stream: bytes, *extra: str) -> bytes:
    """Send `stream` to a fresh daemon, close stdin, return all it wrote to stdout."""
    proc = subprocess.run(serve_argv(data_dir, *extra), input=stream, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, timeout=60)
    return proc.stdout


def test_content_length_session_is_answered_in_content_length(data_dir: Path) -> None:
    stream = b"".join(frame(m, CONTENT_LENGTH) for m in (
        _request(1, "initialize", {}), _request(2, "system/ping"), b"{broken", _request(3, "system/ping")))
    out = _raw_session(data_dir, stream)
    decoder = FrameDecoder(1 << 30)
    messages = [msgspec.json.decode(m) for m in decoder.feed(out)]  # type: ignore[arg-type]
    assert decoder.framing == CONTENT_LENGTH and out.startswith(b"Content-Length: ")
    assert not out.endswith(b"\n")  # no ndjson newlines slipped in
    assert messages[0]["result"]["capabilities"]["framing"] == CONTENT_LENGTH
    assert messages[1] == {"jsonrpc": "2.0", "id": 2, "result": {"pong": True}}
    assert messages[2]["id"] is None and messages[2]["error"]["code"] == -32700
    assert messages[3] == {"jsonrpc": "2.0", "id": 3, "result": {"pong": True}}
    assert len(messages) == 4


@pytest.mark.parametrize("framing", [NDJSON, CONTENT_LENGTH])
def test_oversized_message_is_answered_and_the_next_is_served(data_dir: Path, framing: str) -> None:
    big = _request(2, "debug/print", {"text": "z" * 10_000})
    stream = b"".join(frame(m, framing) for m in (
        _request(1, "initialize", {}), big, _request(3, "system/ping")))
    out = _raw_session(data_dir, stream, "--max-message-bytes", "4096")
    messages = [msgspec.json.decode(m) for m in FrameDecoder(1 << 30).feed(out)]  # type: ignore[arg-type]
    assert len(messages) == 3
    error = messages[1]
    assert error["id"] is None
    assert error["error"]["code"] == -32600
    assert error["error"]["data"]["kind"] == "resource_exhausted"
    assert error["error"]["data"]["limit"] == 4096
    assert error["error"]["data"]["size"] > 4096
    if framing == CONTENT_LENGTH:
        assert error["error"]["data"]["size"] == len(big)  # the header tells the exact size
    assert messages[2] == {"jsonrpc": "2.0", "id": 3, "result": {"pong": True}}


@given(st.integers(0, 2 * LIMIT), st.lists(st.integers(0, 10_000), max_size=10))
def test_leading_whitespace_does_not_count_toward_the_limit(spaces: int, cuts: list[int]) -> None:
    body = b'"' + b"w" * (LIMIT - 2) + b'"'
    stream = b" " * spaces + body + b"\n" + b"[2]\n"
    assert decode_all(FrameDecoder(LIMIT), split(stream, cuts)) == [body, b"[2]"]

"""A password-checking TCP proxy in front of the local PostgreSQL, for tests.

The local server trusts every connection from 127.0.0.1, so it never checks a password. This
proxy does, speaking the real wire protocol (v3) to the client under test:

1. reads the client's first message; an SSLRequest or GSSENCRequest is answered `N` (no
   encryption here) and the next one read; a CancelRequest is passed to the server as is;
2. reads the StartupMessage and answers AuthenticationCleartextPassword (`R`, 3);
3. reads the PasswordMessage (`p`): the right password -> it sends the *original*
   StartupMessage to the real server (which trusts, so answers AuthenticationOk itself) and
   pipes bytes both ways until either side closes; a wrong one -> an ErrorResponse, FATAL,
   SQLSTATE 28P01, and the connection is closed, as PostgreSQL itself would.

Every attempt is recorded (`attempts`: user, database, accepted or not, and the password the
client sent, so a test can check what the client really sent). One thread accepts, one thread
per connection authenticates, two pipe bytes; `close()` ends them all.

    with PgAuthProxy("127.0.0.1", 5432, password="s3cret") as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType

__all__ = ["Attempt", "PgAuthProxy"]

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
AUTH_CLEARTEXT = 3
MAX_MESSAGE = 1 << 20  # a startup or password message is small; anything larger is not a client


@dataclass(frozen=True)
class Attempt:
    user: str
    database: str
    #: what the client sent in its PasswordMessage (None: it closed without sending one)
    password: str | None
    accepted: bool


class _Closed(Exception):
    """The client went away (or sent something that is not the protocol)."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise _Closed
        data += chunk
    return bytes(data)


def _startup_packet(sock: socket.socket) -> bytes:
    """One untyped startup-phase message (length includes itself), whole."""
    (length,) = struct.unpack("!I", _recv_exact(sock, 4))
    if not 8 <= length <= MAX_MESSAGE:
        raise _Closed
    return struct.pack("!I", length) + _recv_exact(sock, length - 4)


def _typed_message(sock: socket.socket) -> tuple[bytes, bytes]:
    kind = _recv_exact(sock, 1)
    (length,) = struct.unpack("!I", _recv_exact(sock, 4))
    if not 4 <= length <= MAX_MESSAGE:
        raise _Closed
    return kind, _recv_exact(sock, length - 4)


def _startup_params(packet: bytes) -> dict[str, str]:
    fields = packet[8:].split(b"\0")
    pairs = [f.decode("utf-8", "replace") for f in fields]
    return {pairs[i]: pairs[i + 1] for i in range(0, len(pairs) - 1, 2) if pairs[i]}


def error_response(sqlstate: str, message: str) -> bytes:
    """A FATAL ErrorResponse as the server sends it."""
    body = b"".join(code + value.encode() + b"\0" for code, value in
                    ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class PgAuthProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, password: str) -> None:
        self.upstream = (upstream_host, upstream_port)
        #: the password a client must send; may be changed while the proxy runs
        self.password = password
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._spawn(self._accept, "pg-auth-proxy-accept")

    # ---- bookkeeping -------------------------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._sockets.add(sock)
            return True

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def accepted(self) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.accepted]

    def refused(self) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if not a.accepted]

    # ---- serving ------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._track(client):
                client.close()
                return
            self._spawn(self._serve, "pg-auth-proxy-conn", client)

    def _serve(self, client: socket.socket) -> None:
        try:
            self._authenticate_and_pipe(client)
        except (_Closed, OSError):
            pass
        finally:
            client.close()

    def _authenticate_and_pipe(self, client: socket.socket) -> None:
        packet = _startup_packet(client)
        while struct.unpack("!I", packet[4:8])[0] in (SSL_REQUEST, GSSENC_REQUEST):
            client.sendall(b"N")
            packet = _startup_packet(client)
        code = struct.unpack("!I", packet[4:8])[0]
        if code == CANCEL_REQUEST:  # carries its own secret key: the server checks it
            with socket.create_connection(self.upstream) as server:
                server.sendall(packet)
            return
        if code != PROTOCOL_3:
            client.sendall(error_response("08P01", "unsupported frontend protocol"))
            return
        params = _startup_params(packet)
        user, database = params.get("user", ""), params.get("database", params.get("user", ""))
        client.sendall(b"R" + struct.pack("!II", 8, AUTH_CLEARTEXT))
        try:
            kind, body = _typed_message(client)
        except _Closed:
            self._record(Attempt(user, database, None, False))
            raise
        sent = body.rstrip(b"\0").decode("utf-8", "replace") if kind == b"p" else None
        if sent != self.password:
            self._record(Attempt(user, database, sent, False))
            client.sendall(error_response("28P01", f'password authentication failed for user "{user}"'))
            return
        self._record(Attempt(user, database, sent, True))
        server = socket.create_connection(self.upstream)
        if not self._track(server):
            server.close()
            return
        try:
            server.sendall(packet)  # the server trusts 127.0.0.1: it answers AuthenticationOk
            self._spawn(self._pipe, "pg-auth-proxy-up", client, server)
            self._pipe(server, client)
        finally:
            server.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        # one side is done: end both, so the other pipe thread returns too
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = list(self._sockets), set()
            threads = list(self._threads)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        except OSError:
            pass
        self._listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()

    def __enter__(self) -> PgAuthProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

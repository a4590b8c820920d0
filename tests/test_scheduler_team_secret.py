"""Team mode's password comes from the secret store, checked for real.

The local PostgreSQL trusts 127.0.0.1, so it never looks at a password. These tests put
`PgAuthProxy` (tests/support/pg_auth_proxy.py) in front of it: a real wire-protocol listener
that asks for a cleartext password and forwards to the server only when it is the right one,
else answers SQLSTATE 28P01 as PostgreSQL does. Through it: the store sends exactly the
secret (not PGPASSWORD, not the URL), a refused or missing password is a typed
`permission_denied` naming the user and host:port, and two real daemons, given the password
with `secrets/set` and team mode with `settings/set`, share jobs through it — with neither the
right nor a wrong password in any answer, stderr line or file of their data directories.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from sidecar.client import DaemonClient, RpcError
from sidecar.errors import PermissionDenied, Unavailable
from sidecar.notifier import Notifier
from sidecar.scheduler.capability import SchedulerCapability
from sidecar.scheduler.pg_store import PgJobStore, endpoint, url_has_password
from sidecar.scheduler.service import SchedulerService
from tests.support.pg_auth_proxy import PgAuthProxy
from tests.test_scheduler_team import REPO, _lines, _psql, _schema, _wait, pg_url, pytestmark  # noqa: F401

SECRET = "team.databasePassword"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def password() -> str:
    return "pw-" + secrets.token_hex(12)  # unlikely to appear anywhere by chance


@pytest.fixture
def proxy(password: str) -> Iterator[PgAuthProxy]:
    with PgAuthProxy("127.0.0.1", 5432, password=password) as server:
        yield server


def _via(proxy: PgAuthProxy, url: str) -> str:
    """`url` (the local server, a test schema) through the proxy."""
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def _secret(value: str | None) -> Callable[[], Any]:
    async def read() -> str | None:
        return value
    return read


# --- what a URL may hold ------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["postgresql://postgres:pw@127.0.0.1/test", "postgresql://postgres:@h/test",
                                 "postgres://h/test?password=pw", "postgresql://h/test?passfile=/tmp/x"])
def test_a_url_with_a_password_is_refused_as_a_setting(url: str) -> None:
    assert url_has_password(url)
    setting = next(d for d in SchedulerCapability.settings if d.key == "team.databaseUrl")
    with pytest.raises(Exception) as caught:
        setting.check(url)
    assert "secrets/set" in str(caught.value) and "pw" not in str(caught.value)


def test_endpoint_names_user_hosts_and_database() -> None:
    assert not url_has_password("postgresql://postgres@127.0.0.1:6543/test?search_path=s")
    where = endpoint("postgresql://postgres@127.0.0.1:6543/test?search_path=s")
    assert (where.user, where.hosts, where.database) == ("postgres", "127.0.0.1:6543", "test")
    assert endpoint("postgresql://bob@h1,h2:7/db").hosts == "h1:5432,h2:7"


# --- the store through the proxy ------------------------------------------------------------------

@pytest.mark.anyio
async def test_store_connects_with_the_secret_only(pg_url: str, proxy: PgAuthProxy, password: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url = _via(proxy, pg_url)
    store = PgJobStore(url, password=_secret(password))
    await store.open()
    try:
        assert await store.list_jobs() == []
    finally:
        await store.close()
    assert proxy.accepted() and {a.password for a in proxy.attempts} == {password}
    assert _psql(f"SELECT count(*) FROM {_schema(pg_url)}.scheduler_schema_migrations").strip() == "1"

    # no secret: no password is sent, even with one in PGPASSWORD (asyncpg would use it)
    monkeypatch.setenv("PGPASSWORD", password)
    before = len(proxy.attempts)
    with pytest.raises(PermissionDenied) as missing:
        await PgJobStore(url, password=_secret(None)).open()
    assert [a.password for a in proxy.attempts[before:]] == [""]
    assert f"user postgres at 127.0.0.1:{proxy.port}" in missing.value.message
    assert f"the secret {SECRET} is not set" in missing.value.message
    assert missing.value.details is not None
    assert missing.value.details["reason"] == "auth_failed" and missing.value.details["secretSet"] is False
    assert missing.value.details["sqlstate"] == "28P01"


@pytest.mark.anyio
async def test_wrong_password_is_permission_denied_without_the_password(pg_url: str, proxy: PgAuthProxy) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    with pytest.raises(PermissionDenied) as caught:
        await PgJobStore(_via(proxy, pg_url), password=_secret(wrong)).open()
    assert [(a.password, a.accepted) for a in proxy.attempts] == [(wrong, False)]
    error = caught.value
    assert f"team database authentication failed for user postgres at 127.0.0.1:{proxy.port}" in error.message
    assert f"the password in the secret {SECRET} was refused" in error.message
    assert error.details is not None and error.details["secretSet"] is True
    assert wrong not in repr(error) + repr(error.details) + repr(error.__cause__) + repr(error.__context__)


@pytest.mark.anyio
async def test_a_changed_secret_is_used_for_the_next_connection(pg_url: str, proxy: PgAuthProxy,
                                                                password: str) -> None:
    current = {"value": password}

    async def read() -> str | None:
        return current["value"]

    store = PgJobStore(_via(proxy, pg_url), password=read)
    await store.open()
    try:
        rotated = "rotated-" + secrets.token_hex(8)
        proxy.password = current["value"] = rotated
        async with store._pool.acquire(), store._pool.acquire():  # the pool's first one, and a new one
            pass
        assert [a.password for a in proxy.accepted()][-1] == rotated
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_password_in_the_url_is_never_sent(pg_url: str, proxy: PgAuthProxy, password: str) -> None:
    url = _via(proxy, pg_url).replace("postgres@", f"postgres:{password}@")
    with pytest.raises(Unavailable) as caught:
        await PgJobStore(url, password=_secret(None)).open()
    assert caught.value.details is not None and caught.value.details["reason"] == "password_in_url"
    assert password not in caught.value.message
    assert proxy.attempts == []


@pytest.mark.anyio
async def test_service_answers_typed_error_then_recovers_when_the_secret_is_fixed(
        pg_url: str, proxy: PgAuthProxy, password: str) -> None:
    current: dict[str, str | None] = {"value": None}

    async def read() -> str | None:
        return current["value"]

    svc = SchedulerService(PgJobStore(_via(proxy, pg_url), password=read), Notifier(), poll_seconds=0.05)
    async with svc.running():
        with pytest.raises(PermissionDenied) as missing:
            await svc.list()
        assert "is not set" in missing.value.message and missing.value.kind == "permission_denied"
        current["value"] = "not-" + password
        with anyio.fail_after(10):
            while True:  # the loop retries with the secret as it is now
                try:
                    await svc.list()
                except PermissionDenied as exc:
                    if "was refused" in exc.message:
                        break
                await anyio.sleep(0.02)
        current["value"] = password
        with anyio.fail_after(10):
            while True:
                try:
                    assert await svc.list() == []
                    break
                except PermissionDenied:
                    await anyio.sleep(0.02)
    assert proxy.accepted() and all(a.password == password for a in proxy.accepted())


# --- real daemons ---------------------------------------------------------------------------------

class Daemon:
    """A real `sidecar serve` (with the team test tool), everything it says kept."""

    def __init__(self, data: Path, log_path: Path) -> None:
        self.data = data
        self.stderr: list[str] = []
        self.stdout: list[bytes] = []
        lock = threading.Lock()

        def keep_err(line: str) -> None:
            with lock:
                self.stderr.append(line)

        def keep_out(payload: bytes) -> None:
            with lock:
                self.stdout.append(bytes(payload))

        env = {**os.environ, "SIDECAR_SCHEDULER_POLL_SECONDS": "0.2", "SIDECAR_SCHEDULER_LEASE_SECONDS": "2",
               "SIDECAR_LOG_LEVEL": "debug", "SCHEDULER_TEST_LOG": str(log_path), "PYTHONPATH": str(REPO)}
        env.pop("SIDECAR_TEAM_DATABASE_URL", None)  # team mode comes from settings/set
        argv = [sys.executable, "-c", "from tests.test_scheduler_team import serve; serve()", "--data-dir",
                str(data), "--secrets-backend", "file"]
        self.client = DaemonClient(argv, env=env, stderr=subprocess.PIPE, on_stderr=keep_err, on_message=keep_out)
        self.client.initialize("team-secret-test")

    def request(self, method: str, params: Any = None) -> Any:
        return self.client.request(method, params)

    def error(self, method: str, params: Any = None) -> dict[str, Any]:
        with pytest.raises(RpcError) as caught:
            self.client.request(method, params)
        return caught.value.error

    def stop(self) -> None:
        if self.client.proc.poll() is None:
            self.client.shutdown(timeout=10)


def _job(name: str, at: str) -> dict[str, Any]:
    return {"name": name, "schedule": {"at": at}, "concurrency": "parallel",
            "target": {"type": "tool", "name": "team__work", "input": {"seconds": 0.2}}}


def _until_ok(daemon: Daemon, method: str, params: Any = None, timeout: float = 15) -> Any:
    result: list[Any] = []

    def ok() -> bool:
        try:
            result.append(daemon.request(method, params))
            return True
        except RpcError:
            return False
    _wait(ok, timeout, f"{method} to succeed")
    return result[-1]


@pytest.mark.slow
def test_daemons_share_jobs_through_the_password_checking_proxy(tmp_path: Path, pg_url: str, proxy: PgAuthProxy,
                                                                password: str) -> None:
    wrong = "wrong-" + secrets.token_hex(12)
    team_url = _via(proxy, pg_url)
    log_path = tmp_path / "work.log"
    seen: list[Daemon] = []

    def start(name: str) -> Daemon:
        daemon = Daemon(tmp_path / name, log_path)
        seen.append(daemon)
        return daemon

    try:
        # local mode: a job on the embedded database; the password of B goes in its secret store;
        # a URL holding a password is refused as a setting; team mode is one setting away
        a, b = start("a"), start("b")
        local = a.request("scheduler/jobs/create", {**_job("local", "2099-01-01T00:00:00Z")})
        b.request("secrets/set", {"name": SECRET, "value": password})
        refused = a.error("settings/set", {"key": "team.databaseUrl",
                                           "value": team_url.replace("postgres@", f"postgres:{wrong}@")})
        assert refused["data"]["kind"] == "invalid_params" and SECRET in refused["message"]
        for daemon in (a, b):
            daemon.request("settings/set", {"key": "team.databaseUrl", "value": team_url})
            daemon.stop()

        # team mode. A has no secret: a typed error naming who was refused where, and A goes on
        a, b = start("a"), start("b")
        where = f"user postgres at 127.0.0.1:{proxy.port}"
        error = a.error("scheduler/jobs/list", {})
        assert error["code"] == -32003 and error["data"]["kind"] == "permission_denied", error
        assert where in error["message"] and f"the secret {SECRET} is not set" in error["message"]
        details = error["data"]["details"]
        assert details["reason"] == "auth_failed" and details["secretSet"] is False and details["secret"] == SECRET
        assert a.request("scheduler/jobs/preview", {"schedule": {"cron": "0 9 * * *"}, "count": 2})["times"]
        assert a.request("system/ping") is not None
        assert _until_ok(b, "scheduler/jobs/list", {})["jobs"] == []  # B has the password: team store, empty

        # a wrong password: refused, said so, the password nowhere
        a.request("secrets/set", {"name": SECRET, "value": wrong})

        def says_refused() -> bool:
            try:
                a.request("scheduler/jobs/list", {})
            except RpcError as exc:
                return "was refused" in exc.error["message"] and exc.error["data"]["kind"] == "permission_denied"
            return False
        _wait(says_refused, 15, "A to report its password refused")
        assert a.client.proc.poll() is None

        # the right password: A joins without a restart, and the two share jobs
        a.request("secrets/set", {"name": SECRET, "value": password})
        _until_ok(a, "scheduler/jobs/list", {})
        at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        jobs = [(a, b)[i % 2].request("scheduler/jobs/create", _job(f"job{i}", at)) for i in range(6)]
        assert {j["id"] for j in b.request("scheduler/jobs/list", {})["jobs"]} == {j["id"] for j in jobs}
        assert local["id"] not in {j["id"] for j in a.request("scheduler/jobs/list", {})["jobs"]}
        _wait(lambda: len({slot for w, slot, _ in _lines(log_path) if w == "done"}) >= 6, 60, "6 runs done")
        _wait(lambda: all(b.request("scheduler/history", {"jobId": j["id"], "limit": 5})["runs"]
                          and b.request("scheduler/history", {"jobId": j["id"], "limit": 5})["runs"][0]["status"]
                          == "succeeded" for j in jobs), 15, "history to show the runs")
        done = Counter(slot for w, slot, _ in _lines(log_path) if w == "done")
        assert len(done) == 6 and set(done.values()) == {1}, done
        for job in jobs:  # each run, whoever ran it, is seen the same from both daemons
            assert a.request("scheduler/history", {"jobId": job["id"], "limit": 5}) == \
                b.request("scheduler/history", {"jobId": job["id"], "limit": 5})
        assert _psql(f"SELECT status, count(*) FROM {_schema(pg_url)}.scheduler_runs GROUP BY status").split() \
            == ["succeeded|6"]
        assert len(proxy.accepted()) >= 2 and {x.password for x in proxy.accepted()} == {password}
        assert {x.password for x in proxy.refused()} == {"", wrong}

        # back to local mode: the embedded scheduler still has its job, and runs it
        a.request("settings/set", {"key": "team.databaseUrl", "value": ""})
        a.stop()
        a = start("a")
        assert [j["id"] for j in a.request("scheduler/jobs/list", {})["jobs"]] == [local["id"]]
        a.request("scheduler/jobs/runNow", {"id": local["id"]})
        _wait(lambda: [r["status"] for r in a.request("scheduler/history", {"jobId": local["id"], "limit": 5})
                       ["runs"]] == ["succeeded"], 15, "the local run")
    finally:
        for daemon in seen:
            daemon.stop()

    # neither password in any answer, stderr line or file the daemons wrote (logs, databases)
    for daemon in seen:
        said = "\n".join(daemon.stderr) + b"\n".join(daemon.stdout).decode("utf-8", "replace")
        assert daemon.stderr and daemon.stdout
        for text in (password, wrong):
            assert text not in said
    files = [f for f in tmp_path.rglob("*") if f.is_file() and f.name != "work.log"]
    assert any(f.name == "sidecar.log" for f in files)
    for f in files:
        content = f.read_bytes()
        for text in (password, wrong):
            assert text.encode() not in content, f

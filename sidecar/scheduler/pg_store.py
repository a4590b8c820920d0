"""SQL for the scheduler in team mode: PostgreSQL through asyncpg (imported on first use),
shared by several daemons on several machines.

How each due run is claimed exactly once — two mechanisms, each for what it is good at:

1. Deciding for a due job (`fire_due`) and starting its pending runs (`claim`) lock the
   *job row* with `SELECT ... FOR UPDATE SKIP LOCKED`. While one daemon holds a job, the
   others skip it (they do not queue behind it) and go on with other jobs, so N daemons
   share the work instead of contending; and the concurrency policy (running + pending
   counts) is read and acted on under that one lock, so two daemons cannot both start a
   `skip` job's run. The job's `next_run_at` moves forward in the same transaction, so the
   next daemon to lock it sees the fire times already handled.
2. The runs table's `UNIQUE (job_id, slot)` with `INSERT ... ON CONFLICT DO NOTHING` is the
   invariant in the data itself: one row per fire time of a job, whatever happens (two
   daemons whose clocks disagree, a job edited between two plans, a retried transaction).

A run then moves pending -> running with a conditional UPDATE under the job lock, naming
the owner and a lease expiry; only the owner can renew or finish it, and an expired lease is
put back to pending by exactly one daemon (the UPDATE re-checks `status = 'running'` after
waiting for a concurrent one). Advisory locks were not used: they belong to a connection
(a pool hands connections around, and a daemon killed with -9 keeps its TCP session until the
server notices), and they leave no record; the rows are the record.

Leases compare instants from the daemons' own clocks: machines sharing a team database
should keep their clocks in sync (NTP) to well within `scheduler.leaseSeconds`.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sidecar.errors import PermissionDenied, SidecarError, Unavailable
from sidecar.scheduler.jobstore import Capacity, JobRow, Planner, RunRow
from sidecar.store.database import commit_rule

log = logging.getLogger("sidecar.scheduler")

_JOB_COLUMNS = "id, name, spec, enabled, next_run_at, anchor, created_at, updated_at"
_RUN_COLUMNS = ("id, job_id, slot, status, trigger, scheduled_at, attempt, coalesced, started_at, finished_at, "
                "duration_ms, output, error, owner, lease_expires_at, created_at")
_INSERT_RUN = (f"INSERT INTO scheduler_runs ({_RUN_COLUMNS}) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) "
               "ON CONFLICT (job_id, slot) DO NOTHING RETURNING id")
#: pg_advisory_xact_lock key for applying migrations (one daemon at a time; released at commit)
_MIGRATION_LOCK = 0x5C4ED
_VERSION_TABLE = "scheduler_schema_migrations"


def _job(r: Any) -> JobRow:
    return JobRow(r["id"], r["name"], r["spec"], r["enabled"], r["next_run_at"], r["anchor"], r["created_at"],
                  r["updated_at"])


def _run(r: Any) -> RunRow:
    return RunRow(*(r[i] for i in range(16)))


def _run_values(r: RunRow) -> tuple[Any, ...]:
    return (r.id, r.job_id, r.slot, r.status, r.trigger, r.scheduled_at, r.attempt, r.coalesced, r.started_at,
            r.finished_at, r.duration_ms, r.output, r.error, r.owner, r.lease_expires_at, r.created_at)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of the files in pg_migrations/, in order."""
    found = []
    for entry in resources.files("sidecar.scheduler").joinpath("pg_migrations").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(found)


async def _open_counts(conn: Any, job_id: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'running') AS running, "
        "count(*) FILTER (WHERE status = 'pending') AS pending "
        "FROM scheduler_runs WHERE job_id = $1 AND status IN ('pending', 'running')", job_id)
    return int(row["running"]), int(row["pending"])


#: the secret holding the team database's password (the URL must not hold one)
PASSWORD_SECRET = "team.databasePassword"
#: URL query parameters that would bring a password (or a file of them) from elsewhere
_PASSWORD_QUERY_KEYS = ("password", "passfile")
#: seconds to connect and authenticate (asyncpg's default is 60; a request may wait on it)
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Who connects where, for messages: never a password."""

    user: str
    hosts: str
    database: str

    def describe(self) -> str:
        return f"user {self.user} at {self.hosts}"


def _split(url: str) -> tuple[str, str, dict[str, list[str]], str]:
    """(userinfo, host list, query, path) of a postgresql:// URL, without asyncpg; ValueError if
    it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("not a postgresql:// URL")
    userinfo, _, hostspec = parts.netloc.rpartition("@")
    return userinfo, hostspec, parse_qs(parts.query), parts.path


def url_has_password(url: str) -> bool:
    """Whether a team database URL carries a password (user:password@, ?password=, ?passfile=)."""
    try:
        userinfo, _, query, _ = _split(url)
    except ValueError:  # not parseable: asyncpg will refuse it too, but err on the side of caution
        rest = url.split("//", 1)[-1]
        return ":" in rest.rpartition("@")[0] or "password=" in rest or "passfile=" in rest
    return ":" in userinfo or any(key in query for key in _PASSWORD_QUERY_KEYS)


def endpoint(url: str) -> Endpoint:
    """The user, host:port list and database a URL names, with asyncpg's defaults filled in
    (PGUSER or the login name; port 5432), so an error can say what was refused."""
    try:
        userinfo, hostspec, query, path = _split(url)
    except ValueError:
        return Endpoint("?", "?", "?")
    user = unquote(userinfo.partition(":")[0]) or (query.get("user") or [""])[0] or os.environ.get("PGUSER") or ""
    if not user:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):
            user = "?"
    hostspec = hostspec or (query.get("host") or [""])[0] or os.environ.get("PGHOST", "localhost")
    hosts = []
    for host in hostspec.split(","):
        host = unquote(host)
        bare = host.rsplit("]", 1)[-1] if host.startswith("[") else host
        hosts.append(host if ":" in bare or host.startswith("/") else f"{host}:{(query.get('port') or ['5432'])[0]}")
    database = unquote(path.lstrip("/")) or (query.get("dbname") or query.get("database") or [user])[0]
    return Endpoint(user, ",".join(hosts), database)


def open_error(exc: BaseException, where: Endpoint, *, secret_set: bool) -> SidecarError:
    """The typed error for a failed connect: the server's SQLSTATE and who was refused where,
    never the library's text (it could quote the URL) and never the password."""
    import asyncpg

    details: dict[str, Any] = {"user": where.user, "hosts": where.hosts, "database": where.database,
                               "secret": PASSWORD_SECRET, "secretSet": secret_set}
    if isinstance(exc, asyncpg.InvalidPasswordError):  # 28P01
        why = (f"the password in the secret {PASSWORD_SECRET} was refused" if secret_set else
               f"the server asks for a password and the secret {PASSWORD_SECRET} is not set")
        return PermissionDenied(f"team database authentication failed for {where.describe()}: {why}",
                                reason="auth_failed", sqlstate=exc.sqlstate, **details)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # 28000: pg_hba, no such role
        return PermissionDenied(f"the team database refused the connection for {where.describe()} "
                                f"(SQLSTATE {exc.sqlstate}); check the server's access rules and team.databaseUrl",
                                reason="not_authorized", sqlstate=exc.sqlstate, **details)
    if isinstance(exc, asyncpg.PostgresError):
        return Unavailable(f"the team database refused the connection for {where.describe()} "
                           f"(SQLSTATE {exc.sqlstate}, {type(exc).__name__})", reason="rejected",
                           sqlstate=exc.sqlstate, **details)
    return Unavailable(f"cannot reach the team database at {where.hosts} ({type(exc).__name__}); "
                       "check team.databaseUrl", reason="unreachable", **details)


class PgJobStore:
    kind = "postgresql"

    def __init__(self, url: str, *, password: Callable[[], Awaitable[str | None]] | None = None,
                 pool_size: int = 4) -> None:
        """`password`: reads the secret store (None: no password, the server must trust us). It is
        called for every new connection, so a changed secret takes effect without a restart."""
        self.url = url
        self.endpoint = endpoint(url)
        self._password = password
        self._pool_size = pool_size
        self._pool: Any = None
        #: whether the secret was there on the last read (for the message when auth fails)
        self._secret_set = False

    async def _read_password(self) -> str:
        value = await self._password() if self._password is not None else None
        self._secret_set = value is not None
        return value or ""

    async def open(self) -> None:
        import asyncpg

        if url_has_password(self.url):
            raise Unavailable(f"team.databaseUrl must not hold a password: store it in the secret {PASSWORD_SECRET}",
                              reason="password_in_url", setting="team.databaseUrl", secret=PASSWORD_SECRET)
        await self.close()  # a retry after a half-done open (pool made, migration failed)
        try:
            # a callable, never None: given None, asyncpg would take PGPASSWORD or ~/.pgpass, and
            # the password must come from the secret store only (also: read per new connection)
            self._pool = await asyncpg.create_pool(self.url, password=self._read_password, min_size=1,
                                                   max_size=self._pool_size, command_timeout=30,
                                                   timeout=CONNECT_TIMEOUT)
        except SidecarError:
            raise  # the secret store's own typed error (key unavailable, integrity)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise open_error(exc, self.endpoint, secret_set=self._secret_set) from None
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> list[str]:
        """Apply pending pg_migrations/ files, each in its own transaction, one daemon at a time."""
        applied: list[str] = []
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {_VERSION_TABLE} (version integer PRIMARY KEY, "
                                   "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {_VERSION_TABLE}")}
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    await conn.execute(sql)
                    await conn.execute(f"INSERT INTO {_VERSION_TABLE} (version, name) VALUES ($1, $2)", version, name)
                    applied.append(name)
                    log.info("team database: applied %s", name)
        return applied

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # jobs ----------------------------------------------------------------------------------

    # A request's writes follow the commit rule (sidecar/commit.py) here as in SQLite: once
    # sent they are waited for (command_timeout bounds it), and a committed one is answered.

    async def insert_job(self, job: JobRow) -> None:
        async with commit_rule():
            await self._pool.execute(
            f"INSERT INTO scheduler_jobs ({_JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                job.id, job.name, job.spec, job.enabled, job.next_run_at, job.anchor, job.created_at,
                job.updated_at)

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self._pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE id = $1", job_id)
        return _job(row) if row is not None else None

    async def list_jobs(self, enabled: bool | None = None) -> list[JobRow]:
        if enabled is None:
            rows = await self._pool.fetch(f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs ORDER BY name, id")
        else:
            rows = await self._pool.fetch(
                f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE enabled = $1 ORDER BY name, id", enabled)
        return [_job(r) for r in rows]

    async def update_job(self, job: JobRow) -> bool:
        async with commit_rule():
            status = await self._pool.execute(
                "UPDATE scheduler_jobs SET name = $1, spec = $2, enabled = $3, next_run_at = $4, anchor = $5, "
                "updated_at = $6 WHERE id = $7",
                job.name, job.spec, job.enabled, job.next_run_at, job.anchor, job.updated_at, job.id)
        return status != "UPDATE 0"

    async def delete_job(self, job_id: str) -> bool:
        async with commit_rule():
            return await self._pool.execute("DELETE FROM scheduler_jobs WHERE id = $1", job_id) != "DELETE 0"

    async def cancel_open_runs(self, job_id: str, now: float, reason: str) -> list[RunRow]:
        async with commit_rule():
            rows = await self._pool.fetch(
                "UPDATE scheduler_runs SET status = 'cancelled', finished_at = $1, error = $2 "
                f"WHERE job_id = $3 AND status = 'pending' RETURNING {_RUN_COLUMNS}", now, reason, job_id)
        return [_run(r) for r in rows]

    # the loop ------------------------------------------------------------------------------

    async def next_wake(self) -> float | None:
        row = await self._pool.fetchrow(
            "SELECT (SELECT min(next_run_at) FROM scheduler_jobs WHERE enabled AND next_run_at IS NOT NULL) AS due, "
            "(SELECT min(lease_expires_at) FROM scheduler_runs WHERE status = 'running') AS lease")
        values = [v for v in (row["due"], row["lease"]) if v is not None]
        return min(values) if values else None

    async def fire_due(self, now: float, plan: Planner, limit: int = 100) -> list[RunRow]:
        inserted: list[RunRow] = []
        async with self._pool.acquire() as conn, conn.transaction():
            jobs = [_job(r) for r in await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs WHERE enabled AND next_run_at IS NOT NULL "
                "AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED", now, limit)]
            for job in jobs:
                running, pending = await _open_counts(conn, job.id)
                decided = plan(job, running, pending, now)
                for r in decided.runs:
                    if await conn.fetchval(_INSERT_RUN, *_run_values(r)) is not None:
                        inserted.append(r)
                await conn.execute("UPDATE scheduler_jobs SET next_run_at = $1 WHERE id = $2",
                                   decided.next_run_at, job.id)
        return inserted

    async def add_run(self, run: RunRow) -> RunRow:
        async with commit_rule():
            await self._pool.fetchval(_INSERT_RUN, *_run_values(run))
        return run

    async def claim(self, now: float, owner: str, lease_until: float, capacity: Capacity,
                    limit: int = 100) -> list[tuple[RunRow, JobRow]]:
        claimed: list[tuple[RunRow, JobRow]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            jobs = [_job(r) for r in await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM scheduler_jobs j WHERE EXISTS (SELECT 1 FROM scheduler_runs r "
                "WHERE r.job_id = j.id AND r.status = 'pending') ORDER BY j.id LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit)]
            for job in jobs:
                running, _ = await _open_counts(conn, job.id)
                room = capacity(job, running)
                if room <= 0:
                    continue
                rows = await conn.fetch(
                    "UPDATE scheduler_runs SET status = 'running', owner = $1, lease_expires_at = $2, "
                    "attempt = attempt + 1, started_at = $3 WHERE id IN (SELECT id FROM scheduler_runs "
                    "WHERE job_id = $4 AND status = 'pending' ORDER BY scheduled_at, created_at LIMIT $5) "
                    f"RETURNING {_RUN_COLUMNS}", owner, lease_until, now, job.id, room)
                claimed.extend((_run(r), job) for r in rows)
        return claimed

    async def renew(self, run_ids: list[str], owner: str, lease_until: float) -> set[str]:
        if not run_ids:
            return set()
        rows = await self._pool.fetch(
            "UPDATE scheduler_runs SET lease_expires_at = $1 WHERE id = ANY($2::text[]) AND owner = $3 "
            "AND status = 'running' RETURNING id", lease_until, run_ids, owner)
        return {r["id"] for r in rows}

    async def finish(self, run_id: str, owner: str, status: str, now: float, duration_ms: float,
                     output: str | None, error: str | None) -> bool:
        result = await self._pool.execute(
            "UPDATE scheduler_runs SET status = $1, finished_at = $2, duration_ms = $3, output = $4, error = $5, "
            "lease_expires_at = NULL WHERE id = $6 AND owner = $7 AND status = 'running'",
            status, now, duration_ms, output, error, run_id, owner)
        return result != "UPDATE 0"

    async def release(self, run_ids: list[str], owner: str) -> None:
        if run_ids and self._pool is not None:
            await self._pool.execute(
                "UPDATE scheduler_runs SET status = 'pending', owner = NULL, lease_expires_at = NULL, "
                "attempt = greatest(attempt - 1, 0) WHERE id = ANY($1::text[]) AND owner = $2 AND status = 'running'",
                run_ids, owner)

    async def reap(self, now: float, max_attempts: int) -> list[RunRow]:
        rows = await self._pool.fetch(
            "UPDATE scheduler_runs SET owner = NULL, lease_expires_at = NULL, "
            "status = CASE WHEN attempt < $1 THEN 'pending' ELSE 'failed' END, "
            "finished_at = CASE WHEN attempt < $1 THEN NULL ELSE $2 END, "
            "error = 'the daemon running it stopped (its lease expired)' "
            f"WHERE status = 'running' AND lease_expires_at < $2 RETURNING {_RUN_COLUMNS}", max_attempts, now)
        return [_run(r) for r in rows]

    # reading -------------------------------------------------------------------------------

    async def history(self, job_id: str, limit: int) -> list[RunRow]:
        rows = await self._pool.fetch(
            f"SELECT {_RUN_COLUMNS} FROM scheduler_runs WHERE job_id = $1 "
            "ORDER BY scheduled_at DESC, created_at DESC LIMIT $2", job_id, limit)
        return [_run(r) for r in rows]

    async def get_run(self, run_id: str) -> RunRow | None:
        row = await self._pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM scheduler_runs WHERE id = $1", run_id)
        return _run(row) if row is not None else None

"""SQL for chat's tables (migrations/0006_llm_core.sql): providers, MCP servers, usage, audit."""

from __future__ import annotations

from typing import Any

import msgspec

from sidecar.store.database import Database


class ProviderRow(msgspec.Struct, frozen=True):
    id: str
    kind: str
    base_url: str
    model: str
    headers: str
    max_output_tokens: int
    context_window: int
    requests_per_minute: int
    has_key: int
    created_at: str
    updated_at: str


class McpServerRow(msgspec.Struct, frozen=True):
    id: str
    command: str
    args: str
    env: str
    cwd: str | None
    enabled: int
    created_at: str


class UsageRecord(msgspec.Struct, frozen=True):
    id: str
    provider: str
    model: str
    agent: str | None
    project_id: str | None
    conversation_id: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    first_token_ms: float | None
    outcome: str
    attempts: int
    cost: float | None


class UsageListRow(msgspec.Struct, frozen=True):
    id: str
    at: str
    provider: str
    model: str
    agent: str | None
    conversation_id: str | None
    input_tokens: int
    output_tokens: int
    latency_ms: float
    first_token_ms: float | None
    outcome: str


class AuditRow(msgspec.Struct, frozen=True):
    request: str
    response: str
    tool_calls: str
    error: str | None


_PROVIDER_COLUMNS = ("id, kind, base_url, model, headers, max_output_tokens, context_window, requests_per_minute, "
                     "has_key, created_at, updated_at")
_SERVER_COLUMNS = "id, command, args, env, cwd, enabled, created_at"
_LIST_COLUMNS = ("u.id, u.at, u.provider, u.model, u.agent, u.conversation_id, u.input_tokens, u.output_tokens, "
                 "u.latency_ms, u.first_token_ms, u.outcome")
#: the SQL expression of each `usage/summary` grouping (fixed strings, never user text)
GROUPS = {"day": "substr(at, 1, 10)", "model": "model", "provider": "provider", "agent": "coalesce(agent, '')",
          "project": "coalesce(project_id, '')"}


class LlmStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- providers ----------------------------------------------------------------------

    async def put_provider(self, row: dict[str, Any]) -> ProviderRow:
        (out,) = await self.db.execute_returning(
            "INSERT INTO llm_providers (id, kind, base_url, model, headers, max_output_tokens, context_window, "
            "requests_per_minute, has_key) VALUES (:id, :kind, :base_url, :model, :headers, :max_output_tokens, "
            ":context_window, :requests_per_minute, :has_key) ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, "
            "base_url = excluded.base_url, model = excluded.model, headers = excluded.headers, "
            "max_output_tokens = excluded.max_output_tokens, context_window = excluded.context_window, "
            "requests_per_minute = excluded.requests_per_minute, has_key = excluded.has_key, "
            f"updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') RETURNING {_PROVIDER_COLUMNS}",
            row, as_type=ProviderRow)
        return out

    async def get_provider(self, provider_id: str) -> ProviderRow | None:
        return await self.db.fetch_one(f"SELECT {_PROVIDER_COLUMNS} FROM llm_providers WHERE id = ?", (provider_id,),
                                       as_type=ProviderRow)

    async def list_providers(self) -> list[ProviderRow]:
        return await self.db.fetch_all(f"SELECT {_PROVIDER_COLUMNS} FROM llm_providers ORDER BY id",
                                       as_type=ProviderRow)

    async def delete_provider(self, provider_id: str) -> bool:
        return await self.db.execute("DELETE FROM llm_providers WHERE id = ?", (provider_id,)) > 0

    # ---- MCP servers --------------------------------------------------------------------

    async def put_server(self, row: dict[str, Any]) -> McpServerRow:
        (out,) = await self.db.execute_returning(
            "INSERT INTO mcp_servers (id, command, args, env, cwd, enabled) VALUES (:id, :command, :args, :env, "
            ":cwd, :enabled) ON CONFLICT (id) DO UPDATE SET command = excluded.command, args = excluded.args, "
            f"env = excluded.env, cwd = excluded.cwd, enabled = excluded.enabled RETURNING {_SERVER_COLUMNS}",
            row, as_type=McpServerRow)
        return out

    async def list_servers(self) -> list[McpServerRow]:
        return await self.db.fetch_all(f"SELECT {_SERVER_COLUMNS} FROM mcp_servers ORDER BY id", as_type=McpServerRow)

    async def get_server(self, server_id: str) -> McpServerRow | None:
        return await self.db.fetch_one(f"SELECT {_SERVER_COLUMNS} FROM mcp_servers WHERE id = ?", (server_id,),
                                       as_type=McpServerRow)

    async def delete_server(self, server_id: str) -> bool:
        return await self.db.execute("DELETE FROM mcp_servers WHERE id = ?", (server_id,)) > 0

    # ---- usage and audit ----------------------------------------------------------------

    async def record_call(self, usage: UsageRecord, audit: dict[str, Any] | None, retention_days: int) -> None:
        row = msgspec.structs.asdict(usage)

        def run(conn: Any) -> None:
            conn.execute(
                "INSERT INTO llm_usage (id, provider, model, agent, project_id, conversation_id, input_tokens, "
                "output_tokens, latency_ms, first_token_ms, outcome, attempts, cost) VALUES (:id, :provider, "
                ":model, :agent, :project_id, :conversation_id, :input_tokens, :output_tokens, :latency_ms, "
                ":first_token_ms, :outcome, :attempts, :cost)", row)
            if audit is not None:
                conn.execute("INSERT INTO llm_audit (usage_id, request, response, tool_calls, error) "
                             "VALUES (:usage_id, :request, :response, :tool_calls, :error)", audit)
            if retention_days > 0:
                conn.execute("DELETE FROM llm_audit WHERE usage_id IN (SELECT id FROM llm_usage WHERE at < "
                             "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?))", (f"-{retention_days} days",))

        await self.db.write(run)

    async def summary(self, group_by: str, start: str | None, end: str | None) -> list[tuple[Any, ...]]:
        key = GROUPS[group_by]
        return await self.db.fetch_all(
            f"SELECT {key} AS k, count(*), sum(input_tokens), sum(output_tokens), "
            "sum(outcome NOT IN ('ok', 'cancelled')), avg(latency_ms), avg(first_token_ms), "
            "sum(cost), sum(cost IS NULL) FROM llm_usage "
            "WHERE (:start IS NULL OR at >= :start) AND (:end IS NULL OR at <= :end) "
            "GROUP BY k ORDER BY k", {"start": start, "end": end})

    async def list_audit(self, conversation_id: str | None, provider: str | None, limit: int,
                         before_pk: int | None) -> list[tuple[int, UsageListRow]]:
        rows = await self.db.fetch_all(
            f"SELECT u.pk, {_LIST_COLUMNS} FROM llm_usage u JOIN llm_audit a ON a.usage_id = u.id "
            "WHERE (:conv IS NULL OR u.conversation_id = :conv) AND (:provider IS NULL OR u.provider = :provider) "
            "AND (:before IS NULL OR u.pk < :before) ORDER BY u.pk DESC LIMIT :limit",
            {"conv": conversation_id, "provider": provider, "before": before_pk, "limit": limit})
        return [(row[0], UsageListRow(*row[1:])) for row in rows]

    async def get_audit(self, usage_id: str) -> tuple[UsageListRow, AuditRow] | None:
        row = await self.db.fetch_one(
            f"SELECT {_LIST_COLUMNS}, a.request, a.response, a.tool_calls, a.error FROM llm_usage u "
            "JOIN llm_audit a ON a.usage_id = u.id WHERE u.id = ?", (usage_id,))
        if row is None:
            return None
        return UsageListRow(*row[:11]), AuditRow(*row[11:])

-- 0006: chat — LLM providers, MCP servers, one usage row per provider call, and the LLM audit log.
--
-- API keys are never here: they live in the secret store under `llm.provider.<id>.apiKey`
-- (`has_key` only says one was stored). Header values are kept (a shell may set e.g. an
-- organisation id) but only their names are ever returned. The audit log holds the request
-- body as sent (no headers) and the response; it is switchable off and pruned by age.

CREATE TABLE llm_providers (
    id                  TEXT PRIMARY KEY,
    kind                TEXT NOT NULL CHECK (kind IN ('anthropic', 'openai', 'ollama')),
    base_url            TEXT NOT NULL,
    model               TEXT NOT NULL,
    headers             TEXT NOT NULL DEFAULT '{}',      -- JSON object
    max_output_tokens   INTEGER NOT NULL,
    context_window      INTEGER NOT NULL,
    requests_per_minute INTEGER NOT NULL DEFAULT 0,
    has_key             INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE mcp_servers (
    id         TEXT PRIMARY KEY,
    command    TEXT NOT NULL,
    args       TEXT NOT NULL DEFAULT '[]',               -- JSON list
    env        TEXT NOT NULL DEFAULT '{}',               -- JSON object
    cwd        TEXT,
    enabled    INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE llm_usage (
    pk              INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    at              TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    agent           TEXT,
    project_id      TEXT,
    conversation_id TEXT,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    latency_ms      REAL NOT NULL,
    first_token_ms  REAL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('ok', 'cancelled', 'error', 'rate_limited')),
    attempts        INTEGER NOT NULL DEFAULT 1,
    cost            REAL                                   -- NULL: no price known for the model
) STRICT;

CREATE INDEX llm_usage_at ON llm_usage (at);

CREATE TABLE llm_audit (
    pk        INTEGER PRIMARY KEY,
    usage_id  TEXT NOT NULL UNIQUE REFERENCES llm_usage (id) ON DELETE CASCADE,
    request   TEXT NOT NULL,                               -- JSON: the body sent
    response  TEXT NOT NULL DEFAULT '',                    -- the streamed text
    tool_calls TEXT NOT NULL DEFAULT '[]',                 -- JSON list
    error     TEXT
) STRICT;

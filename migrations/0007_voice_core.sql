-- 0007: voice — conversations with their turns, and the user's own intent patterns.
--
-- A voice conversation keeps its multi-turn state in the row (language, the agent chat it
-- talks to, a pending confirmation as JSON), so a near miss asked about before a restart is
-- still answered by the next turn's yes/no after it. Turns are append-only.

CREATE TABLE voice_conversations (
    pk               INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    language         TEXT NOT NULL DEFAULT 'en',
    agent            TEXT,                                -- the current agent chat, if any
    chat_conversation_id TEXT,                            -- the projects conversation chat writes to
    pending          TEXT,                                -- JSON: the action awaiting yes/no
    status           TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX voice_conversations_updated ON voice_conversations (updated_at DESC);

CREATE TABLE voice_turns (
    pk              INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES voice_conversations (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text            TEXT NOT NULL,
    language        TEXT NOT NULL DEFAULT 'en',
    intent          TEXT,
    slots           TEXT NOT NULL DEFAULT '{}',           -- JSON object
    audio_path      TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (conversation_id, position)
) STRICT;

CREATE TABLE voice_patterns (
    pk         INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    intent     TEXT NOT NULL,
    language   TEXT NOT NULL,
    template   TEXT NOT NULL,
    slots      TEXT NOT NULL DEFAULT '{}',                -- JSON object: fixed slot values
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

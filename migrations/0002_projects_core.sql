-- 0002: projects, their files, conversations and messages, with full-text search.
--
-- From the Vibing2 seed's schema (projects, project_files, messages, token usage), keeping its
-- intent: a project groups conversations and files. Changes: conversations between projects
-- and messages (a conversation may belong to no project); message content as JSON parts with
-- a status (a crash mid-stream leaves "incomplete", never half a row); binary files; a
-- content hash; token usage as a view over messages instead of a second copy.
--
-- Every table that feeds a full-text index has an INTEGER PRIMARY KEY (`pk`): FTS5 external
-- content is keyed by rowid, and only an INTEGER PRIMARY KEY rowid survives VACUUM. Public
-- ids are text. The triggers keep the indexes in sync with FTS5's 'delete' command, which
-- must be given the old values (a plain UPDATE/DELETE on an external-content table, as the
-- seed had, corrupts the index). Two indexes per text: `unicode61 remove_diacritics 2` for
-- words, and `trigram` so Korean (and any) text is found by substring.

CREATE TABLE projects (
    pk            INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    project_type  TEXT NOT NULL DEFAULT 'general',
    active_agents TEXT NOT NULL DEFAULT '[]',          -- JSON list of agent names
    forked_from   TEXT,                                -- id of the project it was forked from
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX projects_updated ON projects (updated_at DESC);

CREATE TABLE project_files (
    pk         INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    path       TEXT NOT NULL,                          -- normalised: a/b/c.txt
    text       TEXT,                                   -- UTF-8 content, or NULL for a binary file
    data       BLOB,                                   -- binary content, or NULL for a text file
    size       INTEGER NOT NULL,                       -- bytes
    sha256     TEXT NOT NULL,                          -- hex digest of the bytes
    language   TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (project_id, path),
    CHECK ((text IS NULL) <> (data IS NULL))
) STRICT;

CREATE TABLE conversations (
    pk         INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    project_id TEXT REFERENCES projects (id) ON DELETE CASCADE,   -- NULL: in no project
    agent      TEXT NOT NULL DEFAULT '',
    title      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX conversations_project ON conversations (project_id, updated_at DESC);
CREATE INDEX conversations_updated ON conversations (updated_at DESC);

CREATE TABLE messages (
    pk              INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,                  -- 0, 1, 2... within the conversation
    role            TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         TEXT NOT NULL DEFAULT '[]',        -- JSON list of content parts
    text            TEXT NOT NULL DEFAULT '',          -- the parts' text, for search
    model           TEXT NOT NULL DEFAULT '',
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'complete'
                    CHECK (status IN ('streaming', 'complete', 'cancelled', 'error', 'incomplete')),
    error           TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (conversation_id, position)
) STRICT;

CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';

-- token usage per conversation and model, from the messages themselves
CREATE VIEW token_usage AS
    SELECT c.project_id, m.conversation_id, m.model,
           sum(m.input_tokens) AS input_tokens, sum(m.output_tokens) AS output_tokens, count(*) AS messages
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
    GROUP BY m.conversation_id, m.model;

-- ---- full-text indexes ------------------------------------------------------------------------

CREATE VIRTUAL TABLE projects_fts USING fts5 (
    name, description, content = 'projects', content_rowid = 'pk',
    tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE projects_tri USING fts5 (
    name, description, content = 'projects', content_rowid = 'pk', tokenize = 'trigram');

CREATE TRIGGER projects_ai AFTER INSERT ON projects BEGIN
    INSERT INTO projects_fts (rowid, name, description) VALUES (new.pk, new.name, new.description);
    INSERT INTO projects_tri (rowid, name, description) VALUES (new.pk, new.name, new.description);
END;
CREATE TRIGGER projects_ad AFTER DELETE ON projects BEGIN
    INSERT INTO projects_fts (projects_fts, rowid, name, description)
        VALUES ('delete', old.pk, old.name, old.description);
    INSERT INTO projects_tri (projects_tri, rowid, name, description)
        VALUES ('delete', old.pk, old.name, old.description);
END;
CREATE TRIGGER projects_au AFTER UPDATE OF name, description ON projects BEGIN
    INSERT INTO projects_fts (projects_fts, rowid, name, description)
        VALUES ('delete', old.pk, old.name, old.description);
    INSERT INTO projects_tri (projects_tri, rowid, name, description)
        VALUES ('delete', old.pk, old.name, old.description);
    INSERT INTO projects_fts (rowid, name, description) VALUES (new.pk, new.name, new.description);
    INSERT INTO projects_tri (rowid, name, description) VALUES (new.pk, new.name, new.description);
END;

-- Messages are indexed in batches, not row by row. An append only queues its rowid in
-- `messages_unindexed` (one small row in the same transaction, so a crash loses nothing);
-- `store.index_pending` moves the queue into both indexes in one transaction (the service
-- runs it in the background a moment after writes, and always before a search, so a search
-- sees every finished message). Feeding FTS5 one row per transaction costs a segment flush
-- and merge work every time (~0.05 ms per index); in a batch a row costs ~0.02 ms. A message
-- still streaming stays queued: chat's checkpoints never rewrite index rows.
--
-- The trigram index holds only messages with non-ASCII text (`messages_nonascii`): it exists
-- for Korean (and other non-Latin) substrings, and a query goes to it only when a term is
-- non-Latin, which an ASCII-only message can never contain.

CREATE TABLE messages_unindexed (pk INTEGER PRIMARY KEY) STRICT;

CREATE VIEW messages_nonascii AS
    SELECT pk, text FROM messages WHERE length(text) <> length(CAST(text AS BLOB));

CREATE VIRTUAL TABLE messages_fts USING fts5 (
    text, content = 'messages', content_rowid = 'pk', tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE messages_tri USING fts5 (
    text, content = 'messages_nonascii', content_rowid = 'pk', tokenize = 'trigram');

CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_unindexed (pk) VALUES (new.pk);
END;
-- only rows the indexes hold are deleted from them ('delete' of a row never inserted corrupts
-- an index): not a queued row, and in the trigram index not an ASCII-only one
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) SELECT 'delete', old.pk, old.text
        WHERE NOT EXISTS (SELECT 1 FROM messages_unindexed WHERE pk = old.pk);
    INSERT INTO messages_tri (messages_tri, rowid, text) SELECT 'delete', old.pk, old.text
        WHERE length(old.text) <> length(CAST(old.text AS BLOB))
          AND NOT EXISTS (SELECT 1 FROM messages_unindexed WHERE pk = old.pk);
    DELETE FROM messages_unindexed WHERE pk = old.pk;
END;
CREATE TRIGGER messages_au AFTER UPDATE OF text ON messages WHEN old.text IS NOT new.text BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) SELECT 'delete', old.pk, old.text
        WHERE NOT EXISTS (SELECT 1 FROM messages_unindexed WHERE pk = old.pk);
    INSERT INTO messages_tri (messages_tri, rowid, text) SELECT 'delete', old.pk, old.text
        WHERE length(old.text) <> length(CAST(old.text AS BLOB))
          AND NOT EXISTS (SELECT 1 FROM messages_unindexed WHERE pk = old.pk);
    INSERT OR IGNORE INTO messages_unindexed (pk) VALUES (new.pk);
END;

-- binary files index their path only (text is NULL)
CREATE VIRTUAL TABLE files_fts USING fts5 (
    path, text, content = 'project_files', content_rowid = 'pk',
    tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE files_tri USING fts5 (
    path, text, content = 'project_files', content_rowid = 'pk', tokenize = 'trigram');

CREATE TRIGGER files_ai AFTER INSERT ON project_files BEGIN
    INSERT INTO files_fts (rowid, path, text) VALUES (new.pk, new.path, new.text);
    INSERT INTO files_tri (rowid, path, text) VALUES (new.pk, new.path, new.text);
END;
CREATE TRIGGER files_ad AFTER DELETE ON project_files BEGIN
    INSERT INTO files_fts (files_fts, rowid, path, text) VALUES ('delete', old.pk, old.path, old.text);
    INSERT INTO files_tri (files_tri, rowid, path, text) VALUES ('delete', old.pk, old.path, old.text);
END;
CREATE TRIGGER files_au AFTER UPDATE OF path, text ON project_files BEGIN
    INSERT INTO files_fts (files_fts, rowid, path, text) VALUES ('delete', old.pk, old.path, old.text);
    INSERT INTO files_tri (files_tri, rowid, path, text) VALUES ('delete', old.pk, old.path, old.text);
    INSERT INTO files_fts (rowid, path, text) VALUES (new.pk, new.path, new.text);
    INSERT INTO files_tri (rowid, path, text) VALUES (new.pk, new.path, new.text);
END;

-- 0004: workflows and the event bus: saved workflow documents, durable runs (one row per
-- run, one per top-level step, and an append-only log of each run's events), and the event
-- bus's durable log (pruned by count and age, settings events.retainCount / retainDays).

CREATE TABLE workflows (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    document   TEXT NOT NULL,                  -- the Workflow document as JSON (ui metadata untouched)
    version    INTEGER NOT NULL DEFAULT 1,     -- +1 on every update
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

-- a run keeps its own copy of the document: editing or deleting the workflow later changes
-- neither its history nor how an interrupted run resumes
CREATE TABLE workflow_runs (
    id            TEXT PRIMARY KEY,
    workflow_id   TEXT NOT NULL,               -- the document's id ('' for an inline one without)
    document      TEXT NOT NULL,
    inputs        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    outputs       TEXT,
    error         TEXT,
    parent_run_id TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
) STRICT;

CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow_id, created_at);
CREATE INDEX workflow_runs_by_status ON workflow_runs (status, created_at);

CREATE TABLE step_runs (
    run_id          TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id         TEXT NOT NULL,
    status          TEXT NOT NULL,             -- pending running succeeded failed recovered skipped cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    output          TEXT,                      -- JSON
    error           TEXT,                      -- JSON {kind, message, details?}
    started_at      TEXT,
    finished_at     TEXT,
    duration_ms     REAL,
    idempotency_key TEXT NOT NULL,             -- <run id>:<step id>, the same on every retry and resume
    PRIMARY KEY (run_id, step_id)
) STRICT, WITHOUT ROWID;

-- append-only: rows are added, never changed (they go only with their run)
CREATE TABLE run_events (
    run_id  TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    step_id TEXT,
    payload TEXT NOT NULL,                     -- JSON object
    time    TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER run_events_append_only BEFORE UPDATE ON run_events
BEGIN
    SELECT RAISE(ABORT, 'run_events is append-only');
END;

-- the event bus's durable log: seq is the bus's global order, kept across restarts
CREATE TABLE event_log (
    seq     INTEGER PRIMARY KEY,
    topic   TEXT NOT NULL,
    payload TEXT NOT NULL,                     -- JSON
    time    TEXT NOT NULL
) STRICT;

CREATE INDEX event_log_by_time ON event_log (time);

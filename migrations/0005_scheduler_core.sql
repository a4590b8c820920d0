-- 0005: scheduler: jobs (their definition as JSON plus the columns the loop queries) and
-- runs (one row per fire time or manual run: pending, running under a lease, done, skipped
-- or missed). Instants are UTC epoch seconds (REAL). Team mode keeps the same tables in
-- PostgreSQL (sidecar/scheduler/pg_migrations/).

CREATE TABLE scheduler_jobs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,                -- JSON: schedule, timezone, target, policies
    enabled      INTEGER NOT NULL DEFAULT 1,
    next_run_at  REAL,                         -- the next fire time; NULL: none left, or paused
    anchor       REAL NOT NULL,                -- `every` schedules count from here
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
) STRICT;

CREATE INDEX scheduler_jobs_due ON scheduler_jobs (next_run_at) WHERE enabled = 1 AND next_run_at IS NOT NULL;

CREATE TABLE scheduler_runs (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES scheduler_jobs (id) ON DELETE CASCADE,
    -- the fire time as text for scheduled runs, `manual:<id>` for runNow: each fire time of a
    -- job gets one row at most, whoever computes it
    slot             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                     'skipped', 'missed', 'cancelled')),
    trigger          TEXT NOT NULL CHECK (trigger IN ('schedule', 'catchup', 'manual')),
    scheduled_at     REAL NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    coalesced        INTEGER NOT NULL DEFAULT 0,
    started_at       REAL,
    finished_at      REAL,
    duration_ms      REAL,
    output           TEXT,                     -- JSON
    error            TEXT,
    owner            TEXT,                     -- the daemon holding the lease
    lease_expires_at REAL,
    created_at       REAL NOT NULL,
    UNIQUE (job_id, slot)
) STRICT;

CREATE INDEX scheduler_runs_history ON scheduler_runs (job_id, scheduled_at DESC);
CREATE INDEX scheduler_runs_open ON scheduler_runs (status, job_id) WHERE status IN ('pending', 'running');

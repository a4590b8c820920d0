-- 0001: the scheduler's tables in team mode (PostgreSQL), the same shape as the embedded
-- migrations/0005_scheduler_core.sql. Instants are UTC epoch seconds (double precision).

CREATE TABLE scheduler_jobs (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    spec         text NOT NULL,                -- JSON: schedule, timezone, target, policies
    enabled      boolean NOT NULL DEFAULT true,
    next_run_at  double precision,            -- the next fire time; NULL: none left
    anchor       double precision NOT NULL,    -- `every` schedules count from here
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);

CREATE INDEX scheduler_jobs_due ON scheduler_jobs (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;

CREATE TABLE scheduler_runs (
    id               text PRIMARY KEY,
    job_id           text NOT NULL REFERENCES scheduler_jobs (id) ON DELETE CASCADE,
    -- the fire time as text for scheduled runs, `manual:<id>` for runNow: one row per fire
    -- time of a job, whichever daemon computes it
    slot             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed',
                                                     'skipped', 'missed', 'cancelled')),
    trigger          text NOT NULL CHECK (trigger IN ('schedule', 'catchup', 'manual')),
    scheduled_at     double precision NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    coalesced        integer NOT NULL DEFAULT 0,
    started_at       double precision,
    finished_at      double precision,
    duration_ms      double precision,
    output           text,                     -- JSON
    error            text,
    owner            text,                     -- the daemon holding the lease
    lease_expires_at double precision,
    created_at       double precision NOT NULL,
    UNIQUE (job_id, slot)
);

CREATE INDEX scheduler_runs_history ON scheduler_runs (job_id, scheduled_at DESC);
CREATE INDEX scheduler_runs_open ON scheduler_runs (status, job_id) WHERE status IN ('pending', 'running');

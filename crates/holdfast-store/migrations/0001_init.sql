-- Holdfast metadata schema, version 1. Written once for both stores: `{ID}` becomes the dialect's
-- auto-increment key and `{INT}` its 64-bit integer. Times are Unix milliseconds, flags 0/1,
-- specs JSON text, secrets the server's ciphertext (never plain text).

CREATE TABLE tokens (
    id {ID},
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at {INT} NOT NULL,
    last_used_at {INT},
    revoked_at {INT}
);

CREATE TABLE endpoints (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    secrets TEXT,
    version {INT} NOT NULL,
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL
);

CREATE TABLE sources (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    secrets TEXT,
    version {INT} NOT NULL,
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL
);

CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    secrets TEXT,
    source TEXT NOT NULL REFERENCES sources (name),
    endpoint TEXT NOT NULL REFERENCES endpoints (name),
    paused {INT} NOT NULL DEFAULT 0,
    next_fire_at {INT},
    version {INT} NOT NULL,
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL
);

-- Jobs outlive their plans: no foreign key on plan. One job per plan and fire time.
CREATE TABLE jobs (
    id {ID},
    kind TEXT NOT NULL,
    plan TEXT,
    endpoint TEXT,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt {INT} NOT NULL,
    max_attempts {INT} NOT NULL,
    params TEXT NOT NULL,
    fire_at {INT},
    created_at {INT} NOT NULL,
    run_after {INT} NOT NULL,
    started_at {INT},
    finished_at {INT},
    lease_owner TEXT,
    lease_expires {INT},
    cancel_requested {INT} NOT NULL DEFAULT 0,
    bytes_read {INT} NOT NULL DEFAULT 0,
    bytes_written {INT} NOT NULL DEFAULT 0,
    snapshot_id TEXT,
    error TEXT,
    UNIQUE (plan, fire_at)
);
CREATE INDEX jobs_queue ON jobs (state, run_after);
CREATE INDEX jobs_plan ON jobs (plan, id);

CREATE TABLE job_log (
    id {ID},
    job_id {INT} NOT NULL,
    at {INT} NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id, id);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

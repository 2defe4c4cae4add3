-- Agents that registered with a server, and when each was last heard from.
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    version TEXT NOT NULL,
    hostname TEXT NOT NULL,
    slots {INT} NOT NULL,
    registered_at {INT} NOT NULL,
    last_seen {INT} NOT NULL
);
-- Each lifecycle step of each attempt of a job, and each try of it. An attempt whose steps
-- started but that never recorded `released` left its cleanup and unlock undone.
CREATE TABLE job_steps (
    id {ID},
    job_id {INT} NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt {INT} NOT NULL,
    step TEXT NOT NULL,
    try_no {INT} NOT NULL,
    state TEXT NOT NULL,
    agent TEXT NOT NULL,
    started_at {INT} NOT NULL,
    finished_at {INT},
    detail TEXT
);
CREATE INDEX job_steps_job ON job_steps (job_id, attempt);

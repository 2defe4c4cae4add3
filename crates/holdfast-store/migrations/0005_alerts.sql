-- Notifiers (webhook, email, chat, heartbeat): a resource like endpoints, secrets sealed.
CREATE TABLE notifiers (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    secrets TEXT,
    version {INT} NOT NULL,
    created_at {INT} NOT NULL,
    updated_at {INT} NOT NULL
);
-- How far the alert evaluator has looked at a job: 0 not yet, 1 its start, 2 its end.
ALTER TABLE jobs ADD COLUMN evaluated {INT} NOT NULL DEFAULT 0;
-- What happened before alerts existed is not news.
UPDATE jobs SET evaluated = 2;
-- Backups: how many restore points of the plan its repository kept after the retention.
ALTER TABLE jobs ADD COLUMN restore_points {INT};
CREATE INDEX jobs_evaluated ON jobs (evaluated, state);
-- Events the server computed. `dedup` makes each one happen once, whichever replica sees it.
CREATE TABLE events (
    id {ID},
    kind TEXT NOT NULL,
    plan TEXT,
    subject TEXT NOT NULL,
    dedup TEXT NOT NULL UNIQUE,
    job_id {INT},
    at {INT} NOT NULL,
    alert {INT} NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
-- The outbox: one row per event and notifier, delivered under a lease like jobs.
CREATE TABLE deliveries (
    id {ID},
    event_id {INT} NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    notifier TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts {INT} NOT NULL DEFAULT 0,
    next_at {INT} NOT NULL,
    lease_owner TEXT,
    lease_expires {INT},
    last_status TEXT,
    last_error TEXT,
    created_at {INT} NOT NULL,
    sent_at {INT},
    UNIQUE (event_id, notifier)
);
CREATE INDEX deliveries_due ON deliveries (state, next_at);
CREATE INDEX deliveries_notifier ON deliveries (notifier, id);
-- Every try of every delivery: the receiver's answer or the error.
CREATE TABLE delivery_attempts (
    id {ID},
    delivery_id {INT} NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at {INT} NOT NULL,
    ok {INT} NOT NULL,
    status TEXT,
    error TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);
-- Each plan's alert state: failing or not, since when, and when it was last told.
CREATE TABLE plan_alerts (
    plan TEXT PRIMARY KEY,
    consecutive_failures {INT} NOT NULL DEFAULT 0,
    failing_since {INT},
    alerted_at {INT},
    last_success_at {INT}
);
-- Work that one replica at a time does (the alert evaluator), under an expiring lease.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires {INT} NOT NULL
);

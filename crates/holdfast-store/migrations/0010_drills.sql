-- When each plan's next scheduled restore drill is due (Unix ms); NULL: none scheduled.
ALTER TABLE plans ADD COLUMN next_verify_at {INT};
CREATE INDEX plans_verify ON plans (next_verify_at);
-- Check drills read one part of the packs each; the part each plan's next one reads.
ALTER TABLE plans ADD COLUMN verify_part {INT} NOT NULL DEFAULT 0;
-- What each drill proved about which restore point (its full report as JSON).
CREATE TABLE drills (
    job_id {INT} PRIMARY KEY,
    plan TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    passed {INT} NOT NULL,
    rto_ms {INT},
    finished_at {INT} NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX drills_snapshot ON drills (snapshot_id, finished_at);
CREATE INDEX drills_plan ON drills (plan, finished_at);

-- Snapshots the server's repository proxy accepted from agents: when it received each one,
-- for which job and plan. Retention on endpoints that agents reach through the server judges
-- snapshots by this time, not by the time a client wrote into them.
CREATE TABLE received_snapshots (
    endpoint TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    plan TEXT NOT NULL,
    job_id {INT} NOT NULL,
    received_at {INT} NOT NULL,
    PRIMARY KEY (endpoint, snapshot)
);

-- The scheduler's question every tick: which plans are due?
CREATE INDEX plans_due ON plans (next_fire_at);
-- The claim walks queued jobs in order; with the endpoint exclusion it must not sort them all.
DROP INDEX jobs_queue;
CREATE INDEX jobs_claim ON jobs (state, run_after, id);

-- When each endpoint's repository is pruned next (Unix ms); NULL: never.
ALTER TABLE endpoints ADD COLUMN next_prune_at {INT};
CREATE INDEX endpoints_prune ON endpoints (next_prune_at);

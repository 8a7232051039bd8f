-- Issue #14. The request rate every process on one client IP sends at is learned from İYS's
-- answers and shared, instead of each process halving its own rate on a 429: a 429 lowers it a
-- little, at most once per İYS window however many processes saw it, and traffic without 429s
-- lets it climb back towards the configured rate (the rule: iys_provider.limits.rate_control).
-- NULL rate: nothing learned yet, so the caller's configured rate applies (rows of V001).
ALTER TABLE iys.rate_limiter
    ADD COLUMN rate               double precision,       -- requests per second, learned
    ADD COLUMN rate_updated_at    timestamptz,            -- when the rate last moved (climb or decrease)
    ADD COLUMN rate_decreased_at  timestamptz,            -- the last 429 that lowered it
    ADD COLUMN rate_decreases     bigint NOT NULL DEFAULT 0;

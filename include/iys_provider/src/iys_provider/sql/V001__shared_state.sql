-- Shared state of the İYS hook: one token per İYS account and one request-rate budget per API
-- host, shared by every task process and worker that talks to İYS.
-- (The schema exists by now: schema.py creates it, only when missing, before any migration.)

-- Access and refresh tokens are credentials: only the package's role may read this table.
CREATE TABLE iys.api_tokens (
    account_key         text PRIMARY KEY,          -- sha256 of host, username and İYS code; no secret in it
    access_token        text,
    access_expires_at   timestamptz,
    refresh_token       text,
    refresh_expires_at  timestamptz,
    blocked_until       timestamptz,               -- H084: no token call before this instant
    block_reason        text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON iys.api_tokens FROM PUBLIC;

-- Every token request, so the hourly budget holds across processes and restarts.
CREATE TABLE iys.token_requests (
    id            bigserial PRIMARY KEY,
    budget_key    text NOT NULL,
    account_key   text NOT NULL,
    grant_type    text NOT NULL,
    outcome       text,
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX token_requests_budget_time ON iys.token_requests (budget_key, requested_at);

-- Request-rate scheduler: each request reserves the next free slot, spaced 1/rate seconds apart.
CREATE TABLE iys.rate_limiter (
    limiter_key  text PRIMARY KEY,
    next_slot    timestamptz NOT NULL DEFAULT clock_timestamp()
);

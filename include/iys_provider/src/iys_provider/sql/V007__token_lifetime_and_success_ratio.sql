-- Issue #12. The access token's lifetime, so its refresh margin can follow it: a token that lives
-- four minutes must not be refreshed five minutes before it expires (i.e. on every request).
ALTER TABLE iys.api_tokens ADD COLUMN access_lifetime interval;  -- İYS's expires_in

-- İYS's success-ratio rule: every answer İYS gave, per API host (the egress budget key), hour
-- and HTTP status (0 = no answer), classified as iys_provider.limits.success_ratio says.
CREATE TABLE iys.api_responses (
    budget_key      text        NOT NULL,
    hour            timestamptz NOT NULL,      -- start of the UTC hour
    status          int         NOT NULL,      -- HTTP status; 0 = transport error (no answer)
    response_class  text        NOT NULL,      -- success, client_error, rate_limited, server_error, transport_error
    responses       bigint      NOT NULL,
    PRIMARY KEY (budget_key, hour, status)
);

-- The 24-hour reading at the end of each run (written by the report).
ALTER TABLE iys.sync_runs
    ADD COLUMN success_ratio_24h  numeric(5, 4),   -- successes ÷ (successes + client errors); NULL without calls
    ADD COLUMN calls_24h          int,
    ADD COLUMN client_errors_24h  int;

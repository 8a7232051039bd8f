-- Issue #13. İYS blocks token requests per client IP (H084), not per account, and restarts its
-- hour on any token call made during the block, whichever account makes it. So the block is kept
-- per budget key (API host, plus the egress label when workers leave through several IPs) and
-- every account on that IP checks it before asking for a token.
CREATE TABLE iys.ip_blocks (
    budget_key     text PRIMARY KEY,
    blocked_until  timestamptz NOT NULL,        -- no token call from this IP before this instant
    block_reason   text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- A block recorded per account by an earlier version still holds for the whole IP: the account's
-- token requests name the budget key it used.
INSERT INTO iys.ip_blocks (budget_key, blocked_until, block_reason)
SELECT DISTINCT ON (r.budget_key) r.budget_key, t.blocked_until, t.block_reason
  FROM iys.api_tokens t
  JOIN iys.token_requests r USING (account_key)
 WHERE t.blocked_until > now()
 ORDER BY r.budget_key, t.blocked_until DESC;

-- The public contract: current consent state per recipient and channel, the users that hold
-- each address, the quarantine of unusable source values, and sync progress.

CREATE TABLE iys.consents (
    brand_code      bigint      NOT NULL,
    recipient       text        NOT NULL,   -- normalised: '+905XXXXXXXXX' or a lower-case e-mail
    recipient_type  text        NOT NULL CHECK (recipient_type IN ('BIREYSEL', 'TACIR')),
    type            text        NOT NULL CHECK (type IN ('ARAMA', 'MESAJ', 'EPOSTA')),
    status          text                 CHECK (status IN ('ONAY', 'RET')),
                                            -- NULL: İYS holds no ONAY/RET we know of: not sendable
    consent_date    timestamptz,
    source          text,
    creation_date   timestamptz,
    transaction_id  text,
    checked_at      timestamptz,            -- last time İYS was asked about this address
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, recipient, recipient_type, type)
);

CREATE TABLE iys.user_recipients (
    brand_code      bigint      NOT NULL,
    user_id         text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('phone', 'email')),
    recipient       text        NOT NULL,
    recipient_type  text        NOT NULL DEFAULT 'BIREYSEL' CHECK (recipient_type IN ('BIREYSEL', 'TACIR')),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, user_id, kind)
);
CREATE INDEX user_recipients_recipient ON iys.user_recipients (brand_code, recipient);

-- Fingerprint of each user's source row as last processed, so the incremental sync can find new
-- and changed users without normalising the whole user base every night.
CREATE TABLE iys.user_sources (
    brand_code  bigint      NOT NULL,
    user_id     text        NOT NULL,
    digest      text        NOT NULL,      -- md5 of phone, e-mail and recipient type as read
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, user_id)
);

CREATE TABLE iys.rejected_recipients (
    brand_code  bigint      NOT NULL,
    user_id     text        NOT NULL,
    field       text        NOT NULL,      -- source column: phone, email, recipient_type, user_id
    raw_value   text,
    reason      text        NOT NULL,      -- a stable reason code (see docs/tables.md)
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, user_id, field)
);

CREATE TABLE iys.sync_state (
    brand_code       bigint      NOT NULL,
    stream           text        NOT NULL,   -- 'changes:IYS', 'changes:HS', 'initial_sync'
    cursor           text,
    last_success_at  timestamptz,
    details          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, stream)
);

-- One row per full scan of the user base; batches are planned once per scan and then only
-- the unfinished ones are processed, however many runs that takes.
CREATE TABLE iys.initial_sync_scans (
    scan_id      bigserial   PRIMARY KEY,
    brand_code      bigint      NOT NULL,
    recipients_sql  text        NOT NULL,    -- the source query this scan was planned with
    batch_size      int         NOT NULL,
    total_users     bigint      NOT NULL,
    batch_count     int         NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    abandoned       boolean     NOT NULL DEFAULT false  -- superseded by a rescan before it finished
);
CREATE UNIQUE INDEX initial_sync_scans_one_open ON iys.initial_sync_scans (brand_code) WHERE finished_at IS NULL;

CREATE TABLE iys.initial_sync_batches (
    scan_id       bigint      NOT NULL REFERENCES iys.initial_sync_scans ON DELETE CASCADE,
    batch_no      int         NOT NULL,
    lower_key     text,                      -- exclusive; NULL = from the start
    upper_key     text        NOT NULL,      -- inclusive
    users         int,
    recipients    int,
    quarantined   int,
    requests      int,
    finished_at   timestamptz,
    PRIMARY KEY (scan_id, batch_no)
);

CREATE VIEW iys.sendable AS
SELECT u.brand_code, u.user_id, c.recipient, c.recipient_type, c.type
  FROM iys.user_recipients u
  JOIN iys.consents c
    ON c.brand_code = u.brand_code AND c.recipient = u.recipient AND c.recipient_type = u.recipient_type
 WHERE c.status = 'ONAY'
   AND ((u.kind = 'phone' AND c.type IN ('MESAJ', 'ARAMA')) OR (u.kind = 'email' AND c.type = 'EPOSTA'));

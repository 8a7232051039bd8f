-- Push: İYS posts citizen-side movements (IYS_* sources) to the brand's receiver as they happen.
-- The receiver writes each movement once here and applies it to iys.consents by the change
-- feed's rules in the same transaction; the push DAG applies what could not be applied then and
-- tells the consents asset's consumers.

CREATE TABLE iys.push_inbox (
    id                bigserial   PRIMARY KEY,
    brand_code        bigint      NOT NULL,
    transaction_id    text        NOT NULL,
    channel           text        NOT NULL,  -- the registration it arrived on: ARAMA, MESAJ or EPOSTA
    movement          jsonb       NOT NULL,  -- the item as İYS sent it (personal data, like consent_events)
    creation_date     timestamptz,           -- İYS's creationDate: the lag is measured from it
    received_at       timestamptz NOT NULL DEFAULT now(),
    deliveries        int         NOT NULL DEFAULT 1,  -- İYS sent it this many times
    last_delivery_at  timestamptz NOT NULL DEFAULT now(),
    applied_at        timestamptz,           -- stored through the change feed's rules
    apply_error       text,                  -- why applying failed; the push DAG tries again
    announced_at      timestamptz,           -- a run of the push DAG told the consents asset's consumers
    UNIQUE (brand_code, transaction_id)
);
CREATE INDEX push_inbox_unapplied ON iys.push_inbox (brand_code, id) WHERE applied_at IS NULL;
CREATE INDEX push_inbox_unannounced ON iys.push_inbox (brand_code, id) WHERE announced_at IS NULL;
CREATE INDEX push_inbox_received ON iys.push_inbox (brand_code, channel, received_at);
-- The İYS page's "applied in the last hour" and lag.
CREATE INDEX push_inbox_applied ON iys.push_inbox (brand_code, applied_at) WHERE applied_at IS NOT NULL;

-- A pushed item (or a whole body) the receiver could not read: kept with the reason, answered 4xx.
-- A redelivery of the same bytes adds no row, it counts.
CREATE TABLE iys.push_quarantine (
    id                bigserial   PRIMARY KEY,
    brand_code        bigint      NOT NULL,
    channel           text        NOT NULL,
    position          int,                   -- index in the list; NULL when the body itself was unreadable
    reason            text        NOT NULL,
    item              text        NOT NULL,  -- what was sent, cut to 8 kB
    item_hash         text        NOT NULL,  -- sha256 of the whole item
    received_at       timestamptz NOT NULL DEFAULT now(),
    deliveries        int         NOT NULL DEFAULT 1,
    UNIQUE (brand_code, channel, item_hash)
);

-- Per brand and channel: when İYS last reached the receiver. Only authenticated requests count.
CREATE TABLE iys.push_channels (
    brand_code        bigint      NOT NULL,
    channel           text        NOT NULL,
    last_push_at      timestamptz,           -- last request with movements
    last_test_at      timestamptz,           -- last registration test record (dropped, never stored as a consent)
    PRIMARY KEY (brand_code, channel)
);

-- Incremental sync: every change-feed movement (append-only), the outbox the brand's application
-- writes local consent updates to, and one report row per run.

CREATE TABLE iys.consent_events (
    transaction_id  text        PRIMARY KEY,   -- İYS's id of the movement; a replayed page inserts nothing
    brand_code      bigint      NOT NULL,
    recipient       text        NOT NULL,
    recipient_type  text        NOT NULL,
    type            text        NOT NULL,
    status          text        NOT NULL,
    consent_date    timestamptz,
    creation_date   timestamptz NOT NULL,
    source          text,
    stream          text        NOT NULL CHECK (stream IN ('IYS', 'HS')),
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consent_events_recipient ON iys.consent_events (brand_code, recipient, type);

-- The brand's application inserts rows here (state 'pending'); the package moves them to
-- sent / skipped / rejected / failed and never deletes them.
CREATE TABLE iys.consent_updates (
    id              bigserial   PRIMARY KEY,
    recipient       text        NOT NULL,
    type            text        NOT NULL,
    recipient_type  text        NOT NULL DEFAULT 'BIREYSEL',
    status          text        NOT NULL,
    consent_date    timestamptz NOT NULL,
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'submitted', 'sent', 'skipped', 'rejected', 'failed')),
    error_code      text,
    detail          text,
    transaction_id  text,
    attempts        int         NOT NULL DEFAULT 0,
    processed_at    timestamptz,
    -- async batch bookkeeping (set while state = 'submitted')
    request_id      text,
    request_index   int,
    submitted_at    timestamptz
);
CREATE INDEX consent_updates_open ON iys.consent_updates (state, id) WHERE state IN ('pending', 'submitted');

CREATE TABLE iys.sync_runs (
    run_id              text        NOT NULL,
    brand_code          bigint      NOT NULL,
    dag_id              text        NOT NULL,
    started_at          timestamptz,
    finished_at         timestamptz NOT NULL DEFAULT now(),
    pulled_iys          int         NOT NULL DEFAULT 0,
    pulled_hs           int         NOT NULL DEFAULT 0,
    applied             int         NOT NULL DEFAULT 0,
    ignored_stale       int         NOT NULL DEFAULT 0,
    new_users_checked   int         NOT NULL DEFAULT 0,
    pushed              int         NOT NULL DEFAULT 0,
    skipped             int         NOT NULL DEFAULT 0,
    rejected            int         NOT NULL DEFAULT 0,
    failed              int         NOT NULL DEFAULT 0,
    feed_lag_seconds    int,                      -- now minus the newest movement's creationDate
    details             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (run_id, brand_code, dag_id)
);

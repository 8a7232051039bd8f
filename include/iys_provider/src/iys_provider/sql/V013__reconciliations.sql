-- Issue #15: İYS's daily reconciliation (mutabakat). One row per brand and day, the movements
-- the reconciliation found missing, changed or extra, and an index to read one day of movements
-- in İYS's file order.

CREATE TABLE iys.reconciliations (
    brand_code          bigint      NOT NULL,
    report_date         date        NOT NULL,   -- the day (Turkey time) being reconciled
    status              text        NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('agreed', 'repaired_and_agreed', 'mismatch', 'hash_error', 'pending')),
    -- {channel: {source: {approval, rejection, pending, total}}}; source 'HS' or 'IYS'
    summary_ours        jsonb,
    summary_iys         jsonb,
    hash_ours           text,                   -- lower-case hex, by hash_method
    hash_iys            text,
    hash_method         text,                   -- algorithm used (and why, when not the one İYS named)
    -- {missing|changed|extra: {channel: {source: count}}, missing_total, changed_total, extra_total}
    difference          jsonb,
    archived_file       text,                   -- URI of the archived day file, NULL without an archive
    archived_timestamp  text,                   -- URI of the archived .tsr
    agreed_at           timestamptz,            -- when İYS confirmed the agreement (or already held it)
    run_id              text,                   -- the Airflow run that last worked on the day
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- added beyond the public columns
    process_status      text,                   -- İYS's last processStatus of the hash job
    hash_queued_since   timestamptz,            -- first time we saw the job 'queued' (a stuck job stays so)
    hash_file           text,                   -- hash of İYS's downloaded file, by hash_method
    movements_ours      bigint,                 -- rows of our file
    repaired            int         NOT NULL DEFAULT 0,  -- movements stored from İYS's file
    detail              text,                   -- why the day is not agreed, in words
    PRIMARY KEY (brand_code, report_date)
);
CREATE INDEX reconciliations_open ON iys.reconciliations (brand_code, status) WHERE status <> 'agreed';

-- The movements behind a day's difference, by transaction id (no address: it is in consent_events).
CREATE TABLE iys.reconciliation_movements (
    brand_code      bigint      NOT NULL,
    report_date     date        NOT NULL,
    transaction_id  text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('missing', 'changed', 'extra')),
    type            text,
    source          text,
    repaired        boolean     NOT NULL DEFAULT false,  -- stored into consent_events from İYS's file
    found_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, report_date, transaction_id),
    FOREIGN KEY (brand_code, report_date) REFERENCES iys.reconciliations ON DELETE CASCADE
);

-- One day of movements in file order (creation date, then transaction id byte by byte). Not led by
-- brand_code: the brand-led indexes stay the planner's choice for the per-brand retention deletes;
-- a day of several brands is read in one range and filtered.
CREATE INDEX consent_events_day ON iys.consent_events (creation_date, transaction_id COLLATE "C");

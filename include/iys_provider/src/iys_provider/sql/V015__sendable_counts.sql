-- Issue #16. The İYS page shows how many users may be messaged on each channel. Counting
-- iys.sendable joins the user links with the consents: 1.4 s at a million users, too slow for a
-- page. Consents and links change only when the package's own tasks write them, so the
-- incremental run's report counts at its end (nightly, off any critical path; the initial sync's
-- finish does not, its seconds count against the İYS rate) and the page reads the count from
-- here, with the time it was taken.
CREATE TABLE iys.sendable_counts (
    brand_code  bigint       NOT NULL,
    type        text         NOT NULL,   -- MESAJ, ARAMA, EPOSTA
    users       bigint       NOT NULL,   -- rows of iys.sendable: users who may be messaged on it
    counted_at  timestamptz  NOT NULL,
    PRIMARY KEY (brand_code, type)
);

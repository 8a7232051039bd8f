-- The initial sync snapshots the users of a scan into numbered batches when it plans it, so each
-- batch reads exactly its own users by index instead of filtering the whole source query.

-- Scans planned before this version hold key ranges, not snapshots: abandon them so the next
-- run plans afresh (their finished batches stay recorded; rechecking is harmless).
UPDATE iys.initial_sync_scans SET finished_at = now(), abandoned = true WHERE finished_at IS NULL;

UPDATE iys.initial_sync_batches SET lower_key = '' WHERE lower_key IS NULL;
ALTER TABLE iys.initial_sync_batches RENAME COLUMN lower_key TO first_user_id;
ALTER TABLE iys.initial_sync_batches RENAME COLUMN upper_key TO last_user_id;
ALTER TABLE iys.initial_sync_batches ALTER COLUMN first_user_id SET NOT NULL;

-- A batch's rows are deleted in the transaction that records it, so no copy of personal data
-- outlives the scan.
CREATE TABLE iys.initial_sync_queue (
    scan_id         bigint  NOT NULL REFERENCES iys.initial_sync_scans ON DELETE CASCADE,
    batch_no        int     NOT NULL,
    user_id         text    NOT NULL,
    phone           text,
    email           text,
    recipient_type  text,
    digest          text    NOT NULL,
    PRIMARY KEY (scan_id, batch_no, user_id)
);
REVOKE ALL ON iys.initial_sync_queue FROM PUBLIC;

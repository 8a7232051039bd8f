-- The daily reconciliation reads İYS's file by its content, repairs a file without status through
-- İYS's multi status, and leaves a day whose hash job outlasts the run's wait pending.

ALTER TABLE iys.reconciliations
    -- the reading of İYS's file our file was last written in (FileFormat.name: 'literal', 'no_header+crlf', …)
    ADD COLUMN file_layout        text,
    -- first time this day's hash job was seen unfinished (queued, inprogress, 204); NULL once completed
    ADD COLUMN hash_waiting_since timestamptz,
    -- which way the repair went: {status_from: file|multi_status, stored, applied, by_status: {ONAY, RET},
    -- unresolved, status_calls, addresses_asked}
    ADD COLUMN repair             jsonb;

ALTER TABLE iys.reconciliation_movements
    ADD COLUMN status      text,   -- the status the movement was stored with
    ADD COLUMN status_from text CHECK (status_from IN ('file', 'multi_status'));

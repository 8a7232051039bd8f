-- Issue #14. Planning 1M users spent about 3 s of its 8 checking this foreign key on every row
-- COPY wrote into the queue. It protects nothing: the plan inserts the scan row first, in the same
-- transaction, and no scan row is ever deleted (a finished or abandoned scan stays recorded).
ALTER TABLE iys.initial_sync_queue DROP CONSTRAINT IF EXISTS initial_sync_queue_scan_id_fkey;

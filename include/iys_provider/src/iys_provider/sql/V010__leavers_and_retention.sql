-- Issue #13: users who leave the source are forgotten, and old history may be deleted.

-- Retention deletes a brand's oldest rows in chunks; without these it would read whole tables for
-- every chunk. The predicate spells the final states as iys_provider.people.retention_store does.
CREATE INDEX consent_events_received ON iys.consent_events (brand_code, received_at);
CREATE INDEX consent_updates_finished ON iys.consent_updates (brand_code, processed_at)
    WHERE state IN ('sent', 'skipped', 'rejected', 'failed');

-- Users forgotten by the run because the source query no longer returns them (the report fills it).
ALTER TABLE iys.sync_runs ADD COLUMN leavers int NOT NULL DEFAULT 0;

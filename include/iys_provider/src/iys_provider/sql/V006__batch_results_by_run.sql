-- The batch-result sensor stamps the rows it settles or reopens with its DAG run, so a run's
-- counts come from the database, whichever poke (or try) settled them.
ALTER TABLE iys.consent_updates ADD COLUMN result_run_id text;
CREATE INDEX consent_updates_result_run ON iys.consent_updates (result_run_id) WHERE result_run_id IS NOT NULL;

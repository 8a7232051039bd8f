-- Opt-out delivery (issue #10): failed tries counted apart from deliveries in doubt, and the RET
-- deadline watch in every run's report.

-- ``attempts`` counts requests that may have delivered the update (İYS may already hold it);
-- ``tries`` counts every try that did not settle the row (a check or a send), for max_attempts.
ALTER TABLE iys.consent_updates ADD COLUMN tries int NOT NULL DEFAULT 0;
UPDATE iys.consent_updates SET tries = attempts;

ALTER TABLE iys.sync_runs
    ADD COLUMN unsent_rets                 int NOT NULL DEFAULT 0,
    ADD COLUMN rets_due_within_24h         int NOT NULL DEFAULT 0,
    ADD COLUMN oldest_unsent_ret_deadline  timestamptz;

-- Unsent opt-outs by consent date, for the deadline watch.
CREATE INDEX consent_updates_unsent_rets ON iys.consent_updates (consent_date)
    WHERE status = 'RET' AND state IN ('pending', 'submitted', 'failed');

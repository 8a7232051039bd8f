-- The İYS page links a reconciliation day to its own task instance in the Airflow UI, not to the
-- whole run: the days are a mapped task group, so the link needs the day's map index in the run
-- that last worked on it (its position in plan_days' output). NULL for rows written before.
ALTER TABLE iys.reconciliations ADD COLUMN map_index int;

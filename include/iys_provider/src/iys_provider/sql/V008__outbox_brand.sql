-- Issue #13. Several brands share one database: every outbox row names its brand, and every
-- outbox query filters by it, so a run for brand A never pushes (or counts) brand B's updates.

-- IF NOT EXISTS: when this migration refuses (below), the message tells the operator to add and
-- fill the column by hand; the rerun then keeps what they filled in.
ALTER TABLE iys.consent_updates ADD COLUMN IF NOT EXISTS brand_code bigint;

-- The brands this database syncs, from its two small bookkeeping tables (cheap enough for a
-- trigger): a brand's first scan plans a row in one, and every pull and scan records state in the other.
CREATE FUNCTION iys.synced_brands() RETURNS bigint[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT brand_code ORDER BY brand_code), '{}')
      FROM (SELECT brand_code FROM iys.sync_state UNION SELECT brand_code FROM iys.initial_sync_scans) AS known
$$;

DO $$
DECLARE
    brands bigint[];
    unassigned bigint;
BEGIN
    SELECT count(*) INTO unassigned FROM iys.consent_updates WHERE brand_code IS NULL;
    IF unassigned = 0 THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(DISTINCT brand_code ORDER BY brand_code), '{}') INTO brands
      FROM (SELECT unnest(iys.synced_brands()) AS brand_code
            UNION SELECT brand_code FROM iys.consents
            UNION SELECT brand_code FROM iys.sync_runs) AS known;
    IF cardinality(brands) <> 1 THEN
        RAISE EXCEPTION 'iys.consent_updates has % rows without a brand, and this database holds % brands (%): '
                        'the upgrade cannot tell whose they are', unassigned, cardinality(brands), brands
            USING HINT = 'Add and fill the column, then run again: ALTER TABLE iys.consent_updates ADD COLUMN '
                         'brand_code bigint; UPDATE iys.consent_updates SET brand_code = <brand> WHERE <rows of that brand>;';
    END IF;
    UPDATE iys.consent_updates SET brand_code = brands[1] WHERE brand_code IS NULL;
END $$;

ALTER TABLE iys.consent_updates ALTER COLUMN brand_code SET NOT NULL;

-- An application written before brands existed inserts without brand_code. With exactly one
-- brand synced that is unambiguous, so the row gets it; otherwise the insert fails and says why,
-- rather than a later run guessing.
CREATE FUNCTION iys.consent_updates_default_brand() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    brands bigint[];
BEGIN
    IF NEW.brand_code IS NULL THEN
        brands := iys.synced_brands();
        IF cardinality(brands) <> 1 THEN
            RAISE EXCEPTION 'iys.consent_updates.brand_code is required: this database holds % brands (%)',
                            cardinality(brands), brands
                USING ERRCODE = 'not_null_violation',
                      HINT = 'Insert the İYS brand code of the brand the update belongs to.';
        END IF;
        NEW.brand_code := brands[1];
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER consent_updates_default_brand BEFORE INSERT ON iys.consent_updates
    FOR EACH ROW EXECUTE FUNCTION iys.consent_updates_default_brand();

DROP INDEX iys.consent_updates_open;
CREATE INDEX consent_updates_open ON iys.consent_updates (brand_code, state, id) WHERE state IN ('pending', 'submitted');
DROP INDEX iys.consent_updates_unsent_rets;
CREATE INDEX consent_updates_unsent_rets ON iys.consent_updates (brand_code, consent_date)
    WHERE status = 'RET' AND state IN ('pending', 'submitted', 'failed');

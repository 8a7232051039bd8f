-- The user's own "no" counts at once, an undelivered RET never goes quiet, and a mass opt-out
-- waits for a person.

-- The outbox holds recipients as the application wrote them ('0532 123 45 67', ' Ali@X.com ').
-- iys.sendable needs them in İYS's form to match iys.consents, from the moment the row is
-- committed, before any task has run. This is the fast path of iys_provider.normalize in SQL:
-- Turkish numbers in their common shapes, e-mail trimmed and lower-cased. A key may exist for a
-- value the Python normaliser refuses (a landline): no user holds such an address, so it blocks
-- nobody. Every value the normaliser accepts gets the same key here (tested property by property).
CREATE FUNCTION iys.outbox_recipient_key(type text, recipient text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN pg_catalog.upper(pg_catalog.btrim(type)) IN ('MESAJ', 'ARAMA') THEN (
            SELECT '+90' || m[1]
              FROM pg_catalog.regexp_match(
                       pg_catalog.regexp_replace(
                           -- an Excel float's ".0" goes before the dots between digits do
                           pg_catalog.regexp_replace(
                               recipient,
                               '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]*(\+?[0-9]+)\.0+[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]*$',
                               '\1'),
                           '[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff./()\u2010-\u2015\u2212-]',
                           '', 'g'),
                       '^(?:\+90|0090|90|0)?([1-9][0-9]{9})$') AS m)
        WHEN pg_catalog.upper(pg_catalog.btrim(type)) = 'EPOSTA' THEN pg_catalog.lower(
            pg_catalog.regexp_replace(
                recipient,
                '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]+|[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]+$',
                '', 'g'))
    END
$$;

-- ``held``: waiting for a person to approve an unusual volume (never read by the push).
ALTER TABLE iys.consent_updates DROP CONSTRAINT consent_updates_state_check;
ALTER TABLE iys.consent_updates ADD CONSTRAINT consent_updates_state_check
    CHECK (state IN ('pending', 'held', 'submitted', 'sent', 'skipped', 'rejected', 'failed'));

ALTER TABLE iys.consent_updates
    -- The address and channel a RET withdraws, in iys.consents' form; NULL for an ONAY.
    ADD COLUMN ret_key text GENERATED ALWAYS AS (
        CASE WHEN pg_catalog.upper(pg_catalog.btrim(status)) = 'RET' THEN
            pg_catalog.upper(pg_catalog.btrim(type)) || ' '
            || pg_catalog.upper(pg_catalog.btrim(coalesce(nullif(pg_catalog.btrim(recipient_type), ''), 'BIREYSEL')))
            || ' ' || iys.outbox_recipient_key(type, recipient)
        END) STORED,
    -- A failure that may pass (5xx, network, an unreadable answer): put back to pending while
    -- İYS would still accept the update, at most max_requeues times.
    ADD COLUMN failure_retryable boolean NOT NULL DEFAULT false,
    ADD COLUMN requeues int NOT NULL DEFAULT 0,
    -- The approval of an unusual volume: held by one run, approved (or not) by a person.
    ADD COLUMN held_by_run text,
    ADD COLUMN approved_at timestamptz,
    ADD COLUMN approved_by text,
    -- A person has dealt with an undelivered RET: the deadline alarm no longer counts it.
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN acknowledgement text;

-- The open RETs iys.sendable looks up for every ONAY: a few thousand rows of a large table.
CREATE INDEX consent_updates_open_rets ON iys.consent_updates (brand_code, ret_key, consent_date)
    WHERE ret_key IS NOT NULL
      AND (state IN ('pending', 'held', 'submitted', 'failed') OR (state = 'rejected' AND error_code = 'EXPIRED'));

DROP INDEX iys.consent_updates_open;
CREATE INDEX consent_updates_open ON iys.consent_updates (brand_code, state, id)
    WHERE state IN ('pending', 'held', 'submitted');
DROP INDEX iys.consent_updates_unsent_rets;
CREATE INDEX consent_updates_unsent_rets ON iys.consent_updates (brand_code, consent_date)
    WHERE status = 'RET'
      AND (state IN ('pending', 'held', 'submitted', 'failed') OR (state = 'rejected' AND error_code = 'EXPIRED'));

-- A user who said no in the app is not sendable on that channel while the RET is on its way
-- (pending, held for approval, submitted, failed) or came too late for İYS (rejected EXPIRED:
-- the citizen still said no): until İYS confirms it (our copy then says RET) or İYS holds a
-- newer word (a consent date after the RET's: the citizen re-consented through İYS later).
CREATE OR REPLACE VIEW iys.sendable AS
SELECT u.brand_code, u.user_id, c.recipient, c.recipient_type, c.type
  FROM iys.user_recipients u
  JOIN iys.consents c
    ON c.brand_code = u.brand_code AND c.recipient = u.recipient AND c.recipient_type = u.recipient_type
 WHERE c.status = 'ONAY'
   AND ((u.kind = 'phone' AND c.type IN ('MESAJ', 'ARAMA')) OR (u.kind = 'email' AND c.type = 'EPOSTA'))
   AND NOT EXISTS (
       SELECT FROM iys.consent_updates o
        WHERE o.brand_code = c.brand_code
          AND o.ret_key = c.type || ' ' || c.recipient_type || ' ' || c.recipient
          AND (o.state IN ('pending', 'held', 'submitted', 'failed') OR (o.state = 'rejected' AND o.error_code = 'EXPIRED'))
          AND o.consent_date >= coalesce(c.consent_date, '-infinity'));

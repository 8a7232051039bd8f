-- Issue #14. The learned rate remembers where its last decrease came (the knee): İYS's limit was
-- just above it a moment ago, so after a 429 the rate climbs back to 99 % of it within seconds
-- instead of minutes, and only then probes slowly for a higher limit. The rule, its numbers and
-- its verdict table: iys_provider.limits.rate_control (RateRule.climbed, which this function mirrors;
-- a test compares the two).
ALTER TABLE iys.rate_limiter
    ADD COLUMN rate_knee double precision;                -- the learned rate the last decrease came at

CREATE FUNCTION iys.climbed_rate(
    rate double precision,            -- the stored learned rate (NULL: nothing learned yet)
    knee double precision,            -- the stored knee (NULL: no 429 learned yet)
    ceiling double precision,         -- the caller's rate_limit_per_second
    elapsed_seconds double precision, -- since the rate last moved
    max_gap_seconds double precision,
    climb_tau double precision,       -- towards the ceiling without a knee
    knee_tau double precision,        -- towards the knee, below its share
    probe_tau double precision,       -- towards the ceiling from the knee's share up
    knee_share double precision
) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    counted double precision := least(greatest(elapsed_seconds, 0), max_gap_seconds);
    time_constant double precision := climb_tau;
    target double precision;
    cap double precision;
    to_cap double precision;
BEGIN
    IF rate IS NULL THEN
        RETURN ceiling;
    END IF;
    -- Less than a nanosecond teaches nothing, and float8 arithmetic on a denormal raises underflow.
    IF rate >= ceiling OR counted < 1e-9 THEN
        RETURN rate;
    END IF;
    IF knee IS NOT NULL THEN
        time_constant := probe_tau;
        target := least(knee, ceiling);
        cap := target * knee_share;
        IF rate < cap THEN
            to_cap := knee_tau * ln((target - rate) / (target - cap));
            IF counted <= to_cap THEN
                RETURN greatest(rate, target - (target - rate) * exp(-counted / knee_tau));
            END IF;
            rate := cap;
            counted := counted - to_cap;
        END IF;
    END IF;
    RETURN greatest(rate, ceiling - (ceiling - rate) * exp(-counted / time_constant));
END
$$;

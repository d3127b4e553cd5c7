-- Shared helpers, both modes. (Price levels are computed by the writer with the aggregator's
-- rule, shared/levels.py, and stored in price_level: one definition for Redis and SQL.)

-- start < escalate < end: a cascade row only moves forward (a late or redelivered 'start'
-- never overwrites an 'end').
CREATE OR REPLACE FUNCTION liq_phase_rank(phase text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE $1 WHEN 'start' THEN 1 WHEN 'escalate' THEN 2 WHEN 'end' THEN 3 ELSE 0 END
$$;

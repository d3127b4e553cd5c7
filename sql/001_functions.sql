-- Shared helpers, both modes: the one definition of price levels and of cascade phase order.
--
-- Price level of a liquidation = its price rounded DOWN to a multiple of the level size of its
-- base asset: BTC 100 USD, ETH 10, SOL 1; any other asset 10^(floor(log10(price)) - 2), i.e.
-- about 1 % of the price rounded down to a power of ten (DOGE at 0.15 -> 0.001, XRP at 2.3 ->
-- 0.01). The aggregator (aggregator/buckets.py) uses the same rule for its Redis levels.
-- The exponent is found with float8 log10 (numeric log is ~10x slower and this runs per row).

CREATE OR REPLACE FUNCTION liq_level_size(base text, price numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE upper($1)
        WHEN 'BTC' THEN 100::numeric
        WHEN 'ETH' THEN 10::numeric
        WHEN 'SOL' THEN 1::numeric
        ELSE CASE WHEN $2 IS NULL OR $2 <= 0 THEN 1::numeric
                  ELSE trim_scale(power(10::numeric, (floor(log($2::float8)) - 2)::int)) END
    END
$$;

CREATE OR REPLACE FUNCTION liq_price_level(base text, price numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT trim_scale(floor($2 / liq_level_size($1, $2)) * liq_level_size($1, $2))
$$;

-- start < escalate < end: a cascade row only moves forward (a late or redelivered 'start'
-- never overwrites an 'end').
CREATE OR REPLACE FUNCTION liq_phase_rank(phase text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE $1 WHEN 'start' THEN 1 WHEN 'escalate' THEN 2 WHEN 'end' THEN 3 ELSE 0 END
$$;

-- Reader objects, both modes (they read only the level-3 tables and the rollup names, so their
-- SQL is the same whichever mode built those).

-- Exchange comparison: per hour and exchange, long/short counts and values across symbols, and
-- the exchange's share of the hour's liquidated value. A view over liquidations_hourly, so it is
-- kept (and retained) exactly like that rollup.
CREATE OR REPLACE VIEW exchange_comparison AS
SELECT hour,
       exchange,
       sum(event_count)::bigint                                                AS event_count,
       coalesce(sum(event_count) FILTER (WHERE side = 'long'), 0)::bigint      AS long_count,
       coalesce(sum(event_count) FILTER (WHERE side = 'short'), 0)::bigint     AS short_count,
       sum(total_value_usd)                                                    AS total_value_usd,
       coalesce(sum(total_value_usd) FILTER (WHERE side = 'long'), 0)          AS long_value_usd,
       coalesce(sum(total_value_usd) FILTER (WHERE side = 'short'), 0)         AS short_value_usd,
       max(max_value_usd)                                                      AS max_value_usd,
       count(DISTINCT symbol)::bigint                                          AS symbol_count,
       round((100 * sum(total_value_usd)
             / NULLIF(sum(sum(total_value_usd)) OVER (PARTITION BY hour), 0))::numeric, 2) AS value_share_pct
FROM liquidations_hourly
GROUP BY hour, exchange;

-- Price levels of one symbol over the last N hours (exact, from the raw rows, so the current
-- partial hour counts), largest liquidated value first. The symbol is matched case-insensitively.
CREATE OR REPLACE FUNCTION get_price_level_clusters(symbol text, hours integer DEFAULT 4)
RETURNS TABLE (
    price_level      double precision,
    event_count      bigint,
    total_value_usd  double precision,
    long_count       bigint,
    short_count      bigint,
    long_value_usd   double precision,
    short_value_usd  double precision,
    max_value_usd    double precision,
    exchanges        text[],
    first_time       timestamptz,
    last_time        timestamptz
)
LANGUAGE sql STABLE AS $$
    SELECT l.price_level,
           count(*),
           sum(l.value_usd),
           count(*) FILTER (WHERE l.side = 'long'),
           count(*) FILTER (WHERE l.side = 'short'),
           coalesce(sum(l.value_usd) FILTER (WHERE l.side = 'long'), 0),
           coalesce(sum(l.value_usd) FILTER (WHERE l.side = 'short'), 0),
           max(l.value_usd),
           array_agg(DISTINCT l.exchange ORDER BY l.exchange),
           min(l.time),
           max(l.time)
    FROM liquidations_significant AS l
    WHERE l.symbol = upper($1)
      AND l.time >= now() - make_interval(hours => $2)
    GROUP BY l.price_level
    ORDER BY sum(l.value_usd) DESC, l.price_level
$$;

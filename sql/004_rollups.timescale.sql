-- Level 4, TimescaleDB mode: continuous aggregates with the same names and columns as the
-- native rollup tables (004_rollups.native.sql). Real-time (materialized_only = false) so the
-- current hour shows before the refresh policy materializes it. Never written by the writer.

CREATE MATERIALIZED VIEW IF NOT EXISTS liquidations_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time)                      AS hour,
       exchange,
       symbol,
       side,
       count(*)                                                  AS event_count,
       sum(value_usd)                                            AS total_value_usd,
       round(avg(value_usd)::numeric, 2)                         AS avg_value_usd,
       max(value_usd)                                            AS max_value_usd,
       sum(quantity)                                             AS total_quantity,
       count(*) FILTER (WHERE is_cascade)                        AS cascade_event_count,
       coalesce(sum(value_usd) FILTER (WHERE is_cascade), 0)     AS cascade_value_usd
FROM liquidations_significant
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS liquidation_heatmap
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time)  AS hour,
       symbol,
       price_level,
       side,
       count(*)                              AS event_count,
       sum(value_usd)                        AS total_value_usd,
       max(value_usd)                        AS max_value_usd
FROM liquidations_significant
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS liquidation_cascades
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', start_time)          AS hour,
       symbol,
       count(*)                                            AS cascade_count,
       sum(event_count)                                    AS liquidation_count,
       sum(total_value_usd)                                AS total_value_usd,
       sum(long_value_usd)                                 AS long_value_usd,
       sum(short_value_usd)                                AS short_value_usd,
       max(peak_risk_score)                                AS max_risk_score,
       avg(risk_score)                                     AS avg_risk_score,
       count(*) FILTER (WHERE cross_exchange)              AS cross_exchange_count,
       max(cardinality(venues))                            AS max_venues
FROM cascade_events
GROUP BY 1, 2
WITH NO DATA;

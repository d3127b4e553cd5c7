-- TimescaleDB mode: retention and continuous-aggregate refresh policies (compression is 007).
-- Raw level-3 data is kept {{retention_days}} days, rollups {{rollup_retention_days}} days.
--
-- Refresh window: from {{retention_days}} days less 2 hours back (the margin covers the window's
-- rounding to whole buckets) to 1 hour back.
-- - It stays inside the raw retention, so a refresh never covers a dropped raw chunk (that would
--   erase the materialized rollup rows the {{rollup_retention_days}}-day retention must keep).
-- - It reaches back as far as the writer stores rows (it accepts rows up to the retention
--   cutoff): a row older than the window's start lands below the caggs' watermark and would never
--   reach the rollups, unlike native mode's rollups. Only invalidated ranges are re-materialized,
--   so a wide window costs little while no late rows arrive.
-- - Ending 1 hour back leaves the current hour to the real-time part (materialized_only = false).

SELECT add_retention_policy('liquidations_significant',
                            drop_after => INTERVAL '{{retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('cascade_events',
                            drop_after => INTERVAL '{{retention_days}} days', if_not_exists => TRUE);

SELECT add_continuous_aggregate_policy('liquidations_hourly',
    start_offset => justify_hours(INTERVAL '{{retention_days}} days' - INTERVAL '2 hours'),
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('liquidation_heatmap',
    start_offset => justify_hours(INTERVAL '{{retention_days}} days' - INTERVAL '2 hours'),
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('liquidation_cascades',
    start_offset => justify_hours(INTERVAL '{{retention_days}} days' - INTERVAL '2 hours'),
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);

SELECT add_retention_policy('liquidations_hourly',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('liquidation_heatmap',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('liquidation_cascades',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);

-- TimescaleDB mode: retention and continuous-aggregate refresh policies (compression is 007).
-- Raw level-3 data is kept {{retention_days}} days, rollups {{rollup_retention_days}} days. The
-- refresh window (3 days back) stays well inside the raw retention, so dropping raw chunks never
-- erases materialized rollup rows.

SELECT add_retention_policy('liquidations_significant',
                            drop_after => INTERVAL '{{retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('cascade_events',
                            drop_after => INTERVAL '{{retention_days}} days', if_not_exists => TRUE);

SELECT add_continuous_aggregate_policy('liquidations_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('liquidation_heatmap',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);
SELECT add_continuous_aggregate_policy('liquidation_cascades',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);

SELECT add_retention_policy('liquidations_hourly',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('liquidation_heatmap',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);
SELECT add_retention_policy('liquidation_cascades',
                            drop_after => INTERVAL '{{rollup_retention_days}} days', if_not_exists => TRUE);

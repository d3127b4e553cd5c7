-- TimescaleDB mode: both level-3 tables become hypertables (1-day chunks for liquidations,
-- 7-day chunks for the much rarer cascades). A natively partitioned table would be refused.

SELECT create_hypertable('liquidations_significant', by_range('time', INTERVAL '1 day'),
                         if_not_exists => TRUE);

SELECT create_hypertable('cascade_events', by_range('start_time', INTERVAL '7 days'),
                         if_not_exists => TRUE);

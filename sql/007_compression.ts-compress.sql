-- TimescaleDB < 2.18: native compression under its original names (same effect as the
-- columnstore variant used from 2.18 on).

ALTER TABLE liquidations_significant SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'time DESC'
);

SELECT add_compression_policy('liquidations_significant',
                              compress_after => INTERVAL '{{compress_after_days}} days', if_not_exists => TRUE);

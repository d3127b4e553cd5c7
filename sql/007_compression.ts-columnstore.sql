-- TimescaleDB >= 2.18: columnstore (the renamed compression API). Chunks older than
-- {{compress_after_days}} days are converted; segmenting by (exchange, symbol) keeps the
-- per-symbol queries and ON CONFLICT checks on compressed chunks cheap.

ALTER TABLE liquidations_significant SET (
    timescaledb.enable_columnstore = true,
    timescaledb.segmentby = 'exchange, symbol',
    timescaledb.orderby = 'time DESC'
);

CALL add_columnstore_policy('liquidations_significant',
                            after => INTERVAL '{{compress_after_days}} days', if_not_exists => TRUE);

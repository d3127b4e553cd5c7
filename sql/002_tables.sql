-- Level 3, both modes: significant liquidations and cascade events.
-- {{partition_by}} is "PARTITION BY RANGE (time)" in native mode (daily partitions are created by
-- the writer) and empty in TimescaleDB mode (003 turns the table into a hypertable).
-- time is the EXCHANGE's event time: with event_id it is the natural key, so a redelivered or
-- replayed event is recognised as a duplicate (ON CONFLICT DO NOTHING).
-- Prices, quantities and USD values are double precision: the exchanges' decimal strings are
-- parsed to IEEE doubles by the collectors, so numeric would only pretend an exactness the data
-- never had; double precision is what TimescaleDB compresses best (Gorilla) and aggregates fastest,
-- and it lets the writer COPY rows straight into this table (writer/sink.py).

CREATE TABLE IF NOT EXISTS liquidations_significant (
    time            timestamptz      NOT NULL,
    exchange        text             NOT NULL,
    symbol          text             NOT NULL,
    symbol_native   text             NOT NULL,
    base            text             NOT NULL,
    market_type     text             NOT NULL,
    side            text             NOT NULL CHECK (side IN ('long', 'short')),
    price           double precision NOT NULL,
    quantity        double precision NOT NULL,
    value_usd       double precision NOT NULL,
    notional_known  boolean          NOT NULL DEFAULT true,
    price_level     double precision NOT NULL,
    is_cascade      boolean          NOT NULL DEFAULT false,
    risk_score      double precision,
    cascade_id      text,
    event_id        text             NOT NULL,
    sampled         boolean          NOT NULL DEFAULT false,
    received_at     timestamptz,
    PRIMARY KEY (time, exchange, event_id)
) {{partition_by}};

CREATE INDEX IF NOT EXISTS liquidations_significant_symbol_time_idx
    ON liquidations_significant (symbol, time DESC);

-- One row per cascade, upserted as its start -> escalate -> end messages arrive.
CREATE TABLE IF NOT EXISTS cascade_events (
    cascade_id                  text             NOT NULL,
    symbol                      text             NOT NULL,
    start_time                  timestamptz      NOT NULL,
    end_time                    timestamptz      NOT NULL,
    venues                      text[]           NOT NULL,
    event_count                 integer          NOT NULL,
    total_value_usd             double precision NOT NULL,
    long_value_usd              double precision NOT NULL,
    short_value_usd             double precision NOT NULL,
    risk_score                  double precision NOT NULL,
    peak_risk_score             double precision NOT NULL,
    band                        text             NOT NULL,
    volume_concentration        double precision NOT NULL,
    time_compression            double precision NOT NULL,
    price_clustering            double precision NOT NULL,
    side_imbalance              double precision NOT NULL,
    institutional_ratio         double precision NOT NULL,
    cross_exchange_correlation  double precision NOT NULL,
    cross_exchange              boolean          NOT NULL,
    phase                       text             NOT NULL CHECK (phase IN ('start', 'escalate', 'end')),
    status                      text             NOT NULL CHECK (status IN ('active', 'ended')),
    published_at                timestamptz,
    updated_at                  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (start_time, cascade_id)
);

CREATE INDEX IF NOT EXISTS cascade_events_cascade_id_idx ON cascade_events (cascade_id);
CREATE INDEX IF NOT EXISTS cascade_events_symbol_start_idx ON cascade_events (symbol, start_time DESC);

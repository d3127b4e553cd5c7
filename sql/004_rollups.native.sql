-- Level 4, native mode: rollup TABLES with the same names and columns as the TimescaleDB
-- continuous aggregates (004_rollups.timescale.sql). The writer keeps them exactly in step with
-- liquidations_significant in the same transaction as each insert: the rollups are fed from the
-- insert's RETURNING, i.e. only from rows really inserted (a replayed batch adds nothing).
-- Buckets: date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03') = time_bucket('1 hour', time).

CREATE TABLE IF NOT EXISTS liquidations_hourly (
    hour                 timestamptz NOT NULL,
    exchange             text        NOT NULL,
    symbol               text        NOT NULL,
    side                 text        NOT NULL,
    event_count          bigint      NOT NULL DEFAULT 0,
    total_value_usd      numeric     NOT NULL DEFAULT 0,
    avg_value_usd        numeric GENERATED ALWAYS AS (round(total_value_usd / NULLIF(event_count, 0), 2)) STORED,
    max_value_usd        numeric,
    total_quantity       numeric     NOT NULL DEFAULT 0,
    cascade_event_count  bigint      NOT NULL DEFAULT 0,
    cascade_value_usd    numeric     NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, exchange, symbol, side)
);

CREATE TABLE IF NOT EXISTS liquidation_heatmap (
    hour             timestamptz NOT NULL,
    symbol           text        NOT NULL,
    price_level      numeric     NOT NULL,
    side             text        NOT NULL,
    event_count      bigint      NOT NULL DEFAULT 0,
    total_value_usd  numeric     NOT NULL DEFAULT 0,
    max_value_usd    numeric,
    PRIMARY KEY (hour, symbol, price_level, side)
);

-- Hourly cascade analysis (hour of the cascade's start). Not additive (a cascade row changes as
-- its messages arrive), so the writer recomputes the touched (hour, symbol) rows from
-- cascade_events after each cascade upsert.
CREATE TABLE IF NOT EXISTS liquidation_cascades (
    hour                  timestamptz      NOT NULL,
    symbol                text             NOT NULL,
    cascade_count         bigint           NOT NULL,
    liquidation_count     bigint           NOT NULL,
    total_value_usd       numeric          NOT NULL,
    long_value_usd        numeric          NOT NULL,
    short_value_usd       numeric          NOT NULL,
    max_risk_score        double precision NOT NULL,
    avg_risk_score        double precision NOT NULL,
    cross_exchange_count  bigint           NOT NULL,
    max_venues            integer          NOT NULL,
    PRIMARY KEY (hour, symbol)
);

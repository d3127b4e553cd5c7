-- Level 4, native mode: rollup TABLES with the same names and columns as the TimescaleDB
-- continuous aggregates (004_rollups.timescale.sql). They are kept exactly in step with
-- liquidations_significant in the same transaction as each insert: a statement-level trigger
-- adds the rows the statement really inserted (its transition table), so a replayed batch, whose
-- rows all conflict, adds nothing. The trigger fires for the writer's COPY and for any INSERT
-- (a backfill from psql too); it does not follow UPDATE or DELETE, and retention drops raw
-- partitions without touching the rollups (they are kept a year).
-- Buckets: date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03') = time_bucket('1 hour', time).

CREATE TABLE IF NOT EXISTS liquidations_hourly (
    hour                 timestamptz NOT NULL,
    exchange             text        NOT NULL,
    symbol               text        NOT NULL,
    side                 text        NOT NULL,
    event_count          bigint      NOT NULL DEFAULT 0,
    total_value_usd      double precision NOT NULL DEFAULT 0,
    avg_value_usd        numeric GENERATED ALWAYS AS (
                             round((total_value_usd / NULLIF(event_count, 0))::numeric, 2)) STORED,
    max_value_usd        double precision,
    total_quantity       double precision NOT NULL DEFAULT 0,
    cascade_event_count  bigint      NOT NULL DEFAULT 0,
    cascade_value_usd    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, exchange, symbol, side)
);

CREATE TABLE IF NOT EXISTS liquidation_heatmap (
    hour             timestamptz NOT NULL,
    symbol           text        NOT NULL,
    price_level      double precision NOT NULL,
    side             text        NOT NULL,
    event_count      bigint      NOT NULL DEFAULT 0,
    total_value_usd  double precision NOT NULL DEFAULT 0,
    max_value_usd    double precision,
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
    total_value_usd       double precision NOT NULL,
    long_value_usd        double precision NOT NULL,
    short_value_usd       double precision NOT NULL,
    max_risk_score        double precision NOT NULL,
    avg_risk_score        double precision NOT NULL,
    cross_exchange_count  bigint           NOT NULL,
    max_venues            integer          NOT NULL,
    PRIMARY KEY (hour, symbol)
);

-- The additive rollups of the rows one INSERT or COPY really inserted (ON CONFLICT DO NOTHING
-- leaves the conflicting rows out of the transition table). Cells in key order, so that two
-- writers upserting overlapping cells cannot deadlock.
CREATE OR REPLACE FUNCTION liq_rollup_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO liquidations_hourly AS h (
        hour, exchange, symbol, side, event_count, total_value_usd, max_value_usd,
        total_quantity, cascade_event_count, cascade_value_usd)
    SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03'), exchange, symbol, side, count(*),
           sum(value_usd), max(value_usd), sum(quantity), count(*) FILTER (WHERE is_cascade),
           coalesce(sum(value_usd) FILTER (WHERE is_cascade), 0)
    FROM inserted
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, exchange, symbol, side) DO UPDATE SET
        event_count = h.event_count + EXCLUDED.event_count,
        total_value_usd = h.total_value_usd + EXCLUDED.total_value_usd,
        max_value_usd = GREATEST(h.max_value_usd, EXCLUDED.max_value_usd),
        total_quantity = h.total_quantity + EXCLUDED.total_quantity,
        cascade_event_count = h.cascade_event_count + EXCLUDED.cascade_event_count,
        cascade_value_usd = h.cascade_value_usd + EXCLUDED.cascade_value_usd;
    INSERT INTO liquidation_heatmap AS m (
        hour, symbol, price_level, side, event_count, total_value_usd, max_value_usd)
    SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03'), symbol, price_level, side, count(*),
           sum(value_usd), max(value_usd)
    FROM inserted
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, symbol, price_level, side) DO UPDATE SET
        event_count = m.event_count + EXCLUDED.event_count,
        total_value_usd = m.total_value_usd + EXCLUDED.total_value_usd,
        max_value_usd = GREATEST(m.max_value_usd, EXCLUDED.max_value_usd);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS liq_rollup_inserted ON liquidations_significant;
CREATE TRIGGER liq_rollup_inserted
    AFTER INSERT ON liquidations_significant
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION liq_rollup_inserted();

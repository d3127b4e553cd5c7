-- Native mode: hours are UTC hours, whatever the session's time zone.
--
-- 004 bucketed with date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03'), and a timestamptz literal
-- without an offset is read in the session's TimeZone: in a zone with a fractional offset
-- (India, Nepal, Iran, Newfoundland, Adelaide) every hour started at :30 or :45 UTC, unlike
-- TimescaleDB's time_bucket. The function below uses the UTC origin; rollup rows written in such
-- a zone are then rebuilt from the raw rows (the hours those still cover), so that each hour
-- has one row again. Rows older than the raw data are left as they are: there is nothing to
-- rebuild them from.

CREATE OR REPLACE FUNCTION liq_rollup_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO liquidations_hourly AS h (
        hour, exchange, symbol, side, event_count, total_value_usd, max_value_usd,
        total_quantity, cascade_event_count, cascade_value_usd)
    SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), exchange, symbol, side, count(*),
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
    SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), symbol, price_level, side, count(*),
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

DO $$
DECLARE
    raw_from timestamptz := (SELECT min(time) FROM liquidations_significant);
    cascades_from timestamptz := (SELECT min(start_time) FROM cascade_events);
    off_hour CONSTANT text := 'date_trunc(''hour'', hour AT TIME ZONE ''UTC'') AT TIME ZONE ''UTC'' <> hour';
    misaligned boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM liquidations_hourly WHERE %s)
                    OR EXISTS (SELECT 1 FROM liquidation_heatmap WHERE %s)
                    OR EXISTS (SELECT 1 FROM liquidation_cascades WHERE %s)', off_hour, off_hour, off_hour)
        INTO misaligned;
    IF NOT misaligned THEN
        RETURN;
    END IF;
    IF raw_from IS NOT NULL THEN
        raw_from := date_bin('1 hour', raw_from, TIMESTAMPTZ '2000-01-03 00:00:00+00') - INTERVAL '1 hour';
        DELETE FROM liquidations_hourly WHERE hour >= raw_from;
        DELETE FROM liquidation_heatmap WHERE hour >= raw_from;
        INSERT INTO liquidations_hourly (hour, exchange, symbol, side, event_count, total_value_usd,
                                         max_value_usd, total_quantity, cascade_event_count, cascade_value_usd)
        SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), exchange, symbol, side,
               count(*), sum(value_usd), max(value_usd), sum(quantity), count(*) FILTER (WHERE is_cascade),
               coalesce(sum(value_usd) FILTER (WHERE is_cascade), 0)
        FROM liquidations_significant GROUP BY 1, 2, 3, 4;
        INSERT INTO liquidation_heatmap (hour, symbol, price_level, side, event_count, total_value_usd,
                                         max_value_usd)
        SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), symbol, price_level, side,
               count(*), sum(value_usd), max(value_usd)
        FROM liquidations_significant GROUP BY 1, 2, 3, 4;
    END IF;
    IF cascades_from IS NOT NULL THEN
        cascades_from := date_bin('1 hour', cascades_from, TIMESTAMPTZ '2000-01-03 00:00:00+00')
                         - INTERVAL '1 hour';
        DELETE FROM liquidation_cascades WHERE hour >= cascades_from;
        INSERT INTO liquidation_cascades (hour, symbol, cascade_count, liquidation_count, total_value_usd,
                                          long_value_usd, short_value_usd, max_risk_score, avg_risk_score,
                                          cross_exchange_count, max_venues)
        SELECT date_bin('1 hour', start_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), symbol, count(*),
               sum(event_count), sum(total_value_usd), sum(long_value_usd), sum(short_value_usd),
               max(peak_risk_score), avg(risk_score), count(*) FILTER (WHERE cross_exchange),
               max(cardinality(venues))
        FROM cascade_events GROUP BY 1, 2;
    END IF;
END
$$;

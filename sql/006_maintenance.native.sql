-- Native mode: what TimescaleDB's job scheduler would do, as functions the writer's janitor
-- (writer/janitor.py) calls: daily partitions ahead and on demand, retention by dropping whole
-- partitions, and purging old rollup/cascade rows. Each one is safe to run from several
-- writer processes at once (an advisory lock serializes partition DDL).

CREATE OR REPLACE FUNCTION liq_partition_name(day date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'liquidations_significant_p' || to_char($1, 'YYYYMMDD')
$$;

-- Every partition of liquidations_significant with its [range_start, range_end) bounds.
CREATE OR REPLACE FUNCTION liq_partitions()
RETURNS TABLE (partition text, range_start timestamptz, range_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'liquidations_significant'::regclass
    ORDER BY 2
$$;

-- Create the UTC-day partitions of the given days that do not exist yet; returns their names.
-- Run it in its own short transaction (CREATE ... PARTITION OF locks the parent).
CREATE OR REPLACE FUNCTION liq_ensure_partitions(days date[]) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('liq_partitions'));
    FOR d IN SELECT DISTINCT x FROM unnest(days) AS x WHERE x IS NOT NULL ORDER BY 1 LOOP
        part := liq_partition_name(d);
        IF to_regclass(quote_ident(part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF liquidations_significant FOR VALUES FROM (%L) TO (%L)',
                part, d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
            RETURN NEXT part;
        END IF;
    END LOOP;
END
$$;

-- Retention: detach and drop every partition lying entirely before cutoff (the whole-chunk
-- semantics of TimescaleDB's drop_chunks); returns the dropped names.
CREATE OR REPLACE FUNCTION liq_drop_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('liq_partitions'));
    FOR p IN SELECT * FROM liq_partitions() WHERE range_end <= cutoff LOOP
        EXECUTE format('ALTER TABLE liquidations_significant DETACH PARTITION %s', p.partition);
        EXECUTE format('DROP TABLE %s', p.partition);
        RETURN NEXT p.partition;
    END LOOP;
END
$$;

-- Retention of level 3 cascades (cascade_events is small: a plain table, pruned by DELETE).
CREATE OR REPLACE FUNCTION liq_purge_cascades(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM cascade_events WHERE start_time < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Retention of the level 4 rollups (1 year by default); returns the number of rows removed.
CREATE OR REPLACE FUNCTION liq_purge_rollups(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM liquidations_hourly WHERE hour < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM liquidation_heatmap WHERE hour < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM liquidation_cascades WHERE hour < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END
$$;

-- `liq status` reads storage facts with `SELECT key, value FROM liq_storage_status()`, the same
-- keys in both modes (008_status.native.sql). Times are UTC ISO-8601 text.

CREATE OR REPLACE FUNCTION liq_storage_status() RETURNS TABLE (key text, value text)
LANGUAGE sql STABLE AS $$
    WITH chunks AS (
        SELECT range_start, is_compressed
        FROM timescaledb_information.chunks
        WHERE hypertable_name = 'liquidations_significant'
    )
    SELECT 'mode', (SELECT m.value FROM schema_meta AS m WHERE m.key = 'mode')
    UNION ALL
    SELECT 'extversion', coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), 'none')
    UNION ALL
    SELECT 'schema_version', (SELECT max(version) FROM schema_migrations)
    UNION ALL
    SELECT 'compression', coalesce((
        SELECT 'after ' || (config ->> 'compress_after')
        FROM timescaledb_information.jobs
        WHERE hypertable_name = 'liquidations_significant' AND proc_name = 'policy_compression'
        LIMIT 1), 'no policy')
    UNION ALL
    SELECT 'compressed_chunks', count(*) FILTER (WHERE is_compressed)::text FROM chunks
    UNION ALL
    SELECT 'partition_kind', 'hypertable chunk (1 day)'
    UNION ALL
    SELECT 'partitions', count(*)::text FROM chunks
    UNION ALL
    SELECT 'oldest_partition', to_char(min(range_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM chunks
    UNION ALL
    SELECT 'newest_partition', to_char(max(range_start) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM chunks
    UNION ALL
    SELECT 'rows.liquidations_significant', count(*)::text FROM liquidations_significant
    UNION ALL
    SELECT 'rows.cascade_events', count(*)::text FROM cascade_events
    UNION ALL
    SELECT 'rows.liquidations_hourly', count(*)::text FROM liquidations_hourly
    UNION ALL
    SELECT 'rows.liquidation_heatmap', count(*)::text FROM liquidation_heatmap
    UNION ALL
    SELECT 'rows.liquidation_cascades', count(*)::text FROM liquidation_cascades
$$;

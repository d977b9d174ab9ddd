// A node-postgres workload for pyproxy's driver tests: concurrent clients, JSON lines on stdout.
//
// Usage: node workload.js CLIENTS PREFIX (connection from PGHOST, PGPORT, PGUSER, PGPASSWORD,
// PGDATABASE). Before it runs, the test creates for each client i a schema PREFIX_i holding a
// table marker(tag text) with the one row 'PREFIX_i', and a table PREFIX_rows(thread, kind, n).
// Every step prints what it saw (values, or the SQLSTATE of an error); the test judges.
'use strict';

const { Client } = require('pg');

const REPEATS = 5;
const PREPARED_RUNS = 10;
const BATCH_ROWS = 20;

function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

const pause = () => new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 3)));

async function step(thread, name, body) {
  try {
    emit({ thread, step: name, value: await body() });
  } catch (err) {
    emit({ thread, step: name, error: err.code || '', message: String(err.message) });
  }
}

async function scalar(client, query) {
  const res = await client.query(typeof query === 'string' ? { text: query, rowMode: 'array' }
    : { ...query, rowMode: 'array' });
  return res.rows[0][0];
}

async function repeated(client, sql) {
  const values = [];
  for (let i = 0; i < REPEATS; i++) {
    values.push(await scalar(client, sql));
    await client.query('SELECT pg_sleep(0.001)'); // other clients' turn on the shared servers
    await pause();
  }
  return values;
}

async function transaction(client, prefix, thread, kind, commit) {
  try {
    await client.query('BEGIN'); // inside: a refused BEGIN is rolled back like any error
    for (let n = 0; n < 3; n++) {
      await client.query({
        name: `${prefix}_insert`,
        text: `INSERT INTO ${prefix}_rows (thread, kind, n) VALUES ($1, $2, $3)`,
        values: [thread, kind, n],
      });
      await pause();
    }
    await client.query(commit ? 'COMMIT' : 'ROLLBACK');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  return 'done';
}

async function runClient(prefix, thread) {
  const client = new Client({ application_name: `${prefix}_start_${thread}` });
  await client.connect();
  try {
    await step(thread, 'autocommit', async () => [
      await scalar(client, 'SELECT 40 + 2'),
      await scalar(client, 'SELECT current_user'),
      await scalar(client, { text: 'SELECT upper($1::text)', values: ['node-postgres'] }),
    ]);
    await step(thread, 'application_name', async () => {
      await client.query(`SET application_name = '${prefix}_app_${thread}'`);
      return repeated(client, "SELECT current_setting('application_name')");
    });
    await step(thread, 'search_path', async () => {
      await client.query(`SET search_path = ${prefix}_${thread}, public`);
      return repeated(client, 'SELECT tag FROM marker');
    });
    await step(thread, 'prepared', async () => {
      const results = [];
      for (let run = 0; run < PREPARED_RUNS; run++) {
        results.push(await scalar(client, {
          name: 'twice',
          text: "SELECT json_build_array($1::int * 2, $2::text || '!')",
          values: [thread * 100 + run, `t${thread}r${run}`],
        }));
        await pause();
      }
      return results;
    });
    await step(thread, 'commit', () => transaction(client, prefix, thread, 'commit', true));
    await step(thread, 'rollback', () => transaction(client, prefix, thread, 'rollback', false));
    await step(thread, 'batch', async () => {
      let total = 0;
      for (let n = 0; n < BATCH_ROWS; n++) {
        const res = await client.query({
          name: `${prefix}_batch`,
          text: `INSERT INTO ${prefix}_rows (thread, kind, n) VALUES ($1, 'batch', $2)`,
          values: [thread, n],
        });
        total += res.rowCount;
      }
      return total;
    });
    await step(thread, 'rows', async () => {
      const res = await client.query({
        name: `${prefix}_rows`,
        text: `SELECT kind, count(*)::int, sum(n)::int FROM ${prefix}_rows WHERE thread = $1
               GROUP BY kind ORDER BY kind`,
        values: [thread],
        rowMode: 'array',
      });
      return Object.fromEntries(res.rows.map(([kind, count, sum]) => [kind, [count, sum]]));
    });
    await step(thread, 'after', () => scalar(client, "SELECT 'still usable'"));
  } finally {
    await client.end();
  }
}

async function main() {
  const [clients, prefix] = process.argv.slice(2);
  const runs = [];
  for (let i = 0; i < Number(clients); i++) {
    runs.push(runClient(prefix, i).catch((err) => {
      emit({ fatal: String(err.stack || err) });
      process.exitCode = 1;
    }));
  }
  await Promise.all(runs);
}

const timer = setTimeout(() => {
  emit({ fatal: 'workload did not finish within 90 s' });
  process.exit(1);
}, 90000);
main().then(() => clearTimeout(timer), (err) => {
  emit({ fatal: String(err.stack || err) });
  process.exit(1);
});

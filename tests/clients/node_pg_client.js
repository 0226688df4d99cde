// node-postgres (`pg`) against Sluice: connect, DDL, parameterized queries (the extended
// protocol), typed results, transactions, a view, and errors with their SQLSTATE.
//
// Usage: node node_pg_client.js PORT   (with `pg` installed where node finds it: NODE_PATH)
const { Client } = require('pg');
const assert = require('assert');

async function main() {
  const port = Number(process.argv[2]);
  const client = new Client({ host: '127.0.0.1', port, user: 'sluice', database: 'sluice' });
  await client.connect();
  await client.query('CREATE TABLE n (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN, at TIMESTAMP)');
  const at = new Date(Date.UTC(2026, 10, 24, 10, 20, 30));
  for (let i = 0; i < 10; i++) {
    const r = await client.query('INSERT INTO n VALUES ($1, $2, $3, $4, $5)', [i, `n${i}`, i / 4, i % 2 === 0, at]);
    assert.strictEqual(r.rowCount, 1);
  }
  const r = await client.query({ text: 'SELECT id, name, score, ok FROM n WHERE id >= $1 ORDER BY id', values: [8], name: 'from_id' });
  assert.deepStrictEqual(r.rows, [
    { id: 8, name: 'n8', score: 2, ok: true },
    { id: 9, name: 'n9', score: 2.25, ok: false },
  ]);
  assert.deepStrictEqual(r.fields.map((f) => f.name), ['id', 'name', 'score', 'ok']);
  // A named statement runs again with other values.
  const again = await client.query({ text: 'SELECT id, name, score, ok FROM n WHERE id >= $1 ORDER BY id', values: [9], name: 'from_id' });
  assert.strictEqual(again.rows.length, 1);
  const u = await client.query('UPDATE n SET score = score + $1 WHERE id < $2', [1, 3]);
  assert.strictEqual(u.rowCount, 3);
  await client.query('BEGIN');
  await client.query('SAVEPOINT s1');
  await client.query('RELEASE SAVEPOINT s1');
  await client.query('COMMIT');
  await client.query('CREATE MATERIALIZED VIEW per_parity AS SELECT ok, count(*), sum(score) FROM n GROUP BY ok');
  await client.query('FLUSH');
  const v = await client.query('SELECT ok, count, sum FROM per_parity ORDER BY ok');
  assert.deepStrictEqual(v.rows.map((row) => [row.ok, Number(row.count)]), [[false, 5], [true, 5]]);
  try {
    await client.query('SELECT * FROM nowhere WHERE x = $1', [1]);
    assert.fail('no error');
  } catch (e) {
    assert.strictEqual(e.code, '42P01', String(e));
  }
  const still = await client.query('SELECT count(*) FROM n');
  assert.strictEqual(Number(still.rows[0].count), 10);
  await client.end();
  console.log('node-postgres ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

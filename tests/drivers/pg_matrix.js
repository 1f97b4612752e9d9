// The driver matrix for node-postgres (`pg`); tests/drivers.rs runs it,
// checks the output and where rows landed. node-postgres has no COPY of its
// own (that is pg-copy-streams) and no pipeline or batch; what comes closest
// is a multi-statement simple query, one implicit transaction in PostgreSQL.
'use strict'

const { Client } = require('pg')
const { CFG, ORDER, READERS, WRITERS, attempt, expectError, run } = require('./matrix.js')

const READ = 'SELECT email FROM users WHERE tenant_id = $1::uuid ORDER BY email'
const COUNT = 'SELECT count(*)::int AS n FROM users WHERE tenant_id = $1::uuid'
const INSERT = 'INSERT INTO users (tenant_id, email) VALUES ($1::uuid, $2)'

// A scenario on a client of its own, closed at the end.
function scenario (fn) {
  return async () => {
    const client = new Client({ host: CFG.host, port: CFG.port, user: CFG.user, password: CFG.password, database: CFG.db })
    await client.connect()
    try {
      return await fn(client)
    } finally {
      await client.end()
    }
  }
}

async function emails (client, region) {
  return (await client.query(READ, [READERS[region]])).rows.map((r) => r.email)
}

run([
  ['tenant_reads', scenario(async (c) => {
    const out = {}
    for (const r of ORDER) out[r] = await emails(c, r)
    return out
  })],
  ['explicit_region', scenario(async (c) => {
    const out = {}
    for (const r of ORDER) {
      out[r] = (await c.query("SELECT count(*)::int AS n FROM users WHERE region = $1::text::region AND email LIKE 'u%'", [r])).rows[0].n
    }
    return out
  })],
  ['gg001_then_works', scenario(async (c) => {
    const code = await expectError(c.query('SELECT email FROM users WHERE email = $1', ['x']))
    return { code, after: await attempt(emails(c, 'eu')) }
  })],
  ['server_error_then_works', scenario(async (c) => {
    const code = await expectError(c.query('SELECT count(*) / 0 FROM users WHERE tenant_id = $1::uuid', [READERS.us]))
    return { code, after: await attempt(emails(c, 'apac')) }
  })],
  ['prepared_alternating', scenario(async (c) => {
    // A named prepared statement: parsed once, then Bind/Execute only.
    const out = []
    for (const r of [...ORDER, ...ORDER, ...ORDER]) {
      out.push([r, (await c.query({ name: 'count_by_tenant', text: COUNT, values: [READERS[r]] })).rows[0].n])
    }
    return out
  })],
  ['insert_without_region', scenario(async (c) => {
    return (await c.query(INSERT, [WRITERS.us, 'insert@us'])).rowCount
  })],
  ['commit_rollback', scenario(async (c) => {
    await c.query('BEGIN')
    await c.query(INSERT, [WRITERS.us, 'commit@us'])
    const seen = (await c.query("SELECT count(*)::int AS n FROM users WHERE tenant_id = $1::uuid AND email = 'commit@us'", [WRITERS.us])).rows[0].n
    await c.query('COMMIT')
    await c.query('BEGIN')
    await c.query(INSERT, [WRITERS.apac, 'rollback@apac'])
    await c.query('ROLLBACK')
    return { seen_in_txn: seen, after: await attempt(emails(c, 'eu')) }
  })],
  ['multi_statement_two_regions', scenario(async (c) => {
    // Without parameters node-postgres sends one simple Query.
    const code = await expectError(c.query(
      `INSERT INTO users (tenant_id, email) VALUES ('${WRITERS.us}', 'multi-1@us');` +
      `INSERT INTO users (tenant_id, email) VALUES ('${WRITERS.eu}', 'multi-2@eu')`))
    return { code, after: await attempt(emails(c, 'eu')) }
  })]
])

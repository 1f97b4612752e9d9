// The driver matrix for postgres.js (`postgres`), on its default path:
// prepared statements, pipelined. tests/drivers.rs runs it, checks the output
// and where rows landed.
'use strict'

const { Readable } = require('stream')
const { pipeline } = require('stream/promises')
const postgres = require('postgres')
const { CFG, ORDER, READERS, WRITERS, attempt, expectError, run } = require('./matrix.js')

// A scenario on a pool of one connection of its own (so concurrent queries
// share it), ended at the end.
function scenario (fn) {
  return async () => {
    const sql = postgres({
      host: CFG.host,
      port: CFG.port,
      user: CFG.user,
      password: CFG.password,
      database: CFG.db,
      ssl: false,
      max: 1,
      onnotice: () => {}
    })
    try {
      return await fn(sql)
    } finally {
      await sql.end({ timeout: 2 })
    }
  }
}

const read = (sql, region) =>
  sql`SELECT email FROM users WHERE tenant_id = ${READERS[region]}::uuid ORDER BY email`
async function emails (sql, region) {
  return (await read(sql, region)).map((r) => r.email)
}
const insert = (sql, tenant, email) =>
  sql`INSERT INTO users (tenant_id, email) VALUES (${tenant}::uuid, ${email})`

run([
  ['tenant_reads', scenario(async (sql) => {
    const out = {}
    for (const r of ORDER) out[r] = await emails(sql, r)
    return out
  })],
  ['explicit_region', scenario(async (sql) => {
    const out = {}
    for (const r of ORDER) {
      out[r] = (await sql`SELECT count(*)::int AS n FROM users WHERE region = ${r}::text::region AND email LIKE 'u%'`)[0].n
    }
    return out
  })],
  ['gg001_then_works', scenario(async (sql) => {
    const code = await expectError(sql`SELECT email FROM users WHERE email = ${'x'}`)
    return { code, after: await attempt(emails(sql, 'eu')) }
  })],
  ['server_error_then_works', scenario(async (sql) => {
    const code = await expectError(sql`SELECT count(*) / 0 FROM users WHERE tenant_id = ${READERS.us}::uuid`)
    return { code, after: await attempt(emails(sql, 'apac')) }
  })],
  ['prepared_alternating', scenario(async (sql) => {
    const out = []
    for (const r of [...ORDER, ...ORDER, ...ORDER]) {
      out.push([r, (await sql`SELECT count(*)::int AS n FROM users WHERE tenant_id = ${READERS[r]}::uuid`)[0].n])
    }
    return out
  })],
  ['concurrent_three_regions', scenario(async (sql) => {
    // Three queries in flight at once on the one connection: pipelined,
    // each with its own Sync.
    const rows = await Promise.all(ORDER.map((r) => read(sql, r)))
    const results = {}
    ORDER.forEach((r, i) => { results[r] = rows[i].map((x) => x.email) })
    return { results, code: null, after: await attempt(emails(sql, 'eu')) }
  })],
  ['insert_without_region', scenario(async (sql) => {
    return (await insert(sql, WRITERS.us, 'insert@us')).count
  })],
  ['commit_rollback', scenario(async (sql) => {
    const seen = await sql.begin(async (sql) => {
      await insert(sql, WRITERS.us, 'commit@us')
      return (await sql`SELECT count(*)::int AS n FROM users WHERE tenant_id = ${WRITERS.us}::uuid AND email = 'commit@us'`)[0].n
    })
    const rolledBack = await expectError(sql.begin(async (sql) => {
      await insert(sql, WRITERS.apac, 'rollback@apac')
      throw Object.assign(new Error('roll back on purpose'), { code: 'rollback' })
    }))
    if (rolledBack !== 'rollback') throw new Error(`the rollback transaction ended with ${rolledBack}`)
    return { seen_in_txn: seen, after: await attempt(emails(sql, 'eu')) }
  })],
  ['batch_two_regions', scenario(async (sql) => {
    // Returning an array from begin() pipelines its queries in the transaction.
    const code = await expectError(sql.begin((sql) => [
      insert(sql, WRITERS.us, 'batch-1@us'),
      insert(sql, WRITERS.eu, 'batch-2@eu')
    ]))
    return { code, after: await attempt(emails(sql, 'eu')) }
  })],
  ['copy_in', scenario(async (sql) => {
    const rows = `${WRITERS.us}\tcopy-1@us\tus\n${WRITERS.us}\tcopy-2@us\tus\n`
    const code = await expectError((async () => {
      const w = await sql`COPY users (tenant_id, email, region) FROM STDIN`.writable()
      await pipeline(Readable.from([rows]), w)
    })())
    return { code, after: await attempt(emails(sql, 'eu')) }
  })]
])

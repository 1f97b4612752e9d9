// What the Node.js driver programs share: the arguments, the per-scenario
// timeout and the output the Rust test reads (tests/drivers.rs); the same
// protocol as matrix.py.
'use strict'

const CFG = JSON.parse(process.argv[2])

// The non-local regions first: the first routed query of a connection going
// to another region is what drivers break on.
const ORDER = ['us', 'eu', 'apac']

function emit (name, fields) {
  process.stdout.write(JSON.stringify({ scenario: name, ...fields }) + '\n')
}

function describe (e) {
  return { code: (e && e.code) || (e && e.name) || String(e), message: String((e && e.message) || e).slice(0, 500) }
}

// The SQLSTATE the promise rejected with, or null if it resolved.
async function expectError (promise) {
  try {
    await promise
  } catch (e) {
    return describe(e).code
  }
  return null
}

// The reader's emails, or the error the read raised: the read after an
// error says whether the connection still works, and what broke if not.
async function attempt (promise) {
  try {
    return await promise
  } catch (e) {
    return { error: describe(e) }
  }
}

// Runs the scenarios one after another; one that does not settle in time is
// reported as a timeout and left behind (with its connection) while the next
// ones run; the process exits at the end without waiting for it.
async function run (scenarios) {
  for (const [name, fn] of scenarios) {
    if (!CFG.scenarios.includes(name)) continue
    let timer
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve({ timeout: CFG.timeout }), CFG.timeout * 1000)
    })
    const outcome = await Promise.race([
      fn().then((result) => ({ result }), (e) => ({ error: { ...describe(e), trace: String(e && e.stack).slice(0, 800) } })),
      timeout
    ])
    clearTimeout(timer)
    emit(name, outcome)
  }
  process.stdout.write('', () => process.exit(0))
}

module.exports = { CFG, ORDER, READERS: CFG.readers, WRITERS: CFG.writers, attempt, expectError, run }

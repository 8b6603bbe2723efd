import t from 'tap'
import { newEpochBase } from '../../lib/broker/epochs.js'

t.test('epoch bases are 12 base64url characters and never repeat, across refills of the random pool', async (t) => {
  // The pool holds 256 bases: 1000 draws refill it three times.
  const bases = Array.from({ length: 1000 }, () => newEpochBase())
  t.ok(bases.every((b) => /^[A-Za-z0-9_-]{12}$/.test(b)), 'base64url, 12 characters (no , or ; for the SSE cursor)')
  t.equal(new Set(bases).size, bases.length, 'every base is new')
})

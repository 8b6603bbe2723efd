import fc from 'fast-check'
import t from 'tap'
import { headerValues, IdempotencyKeyError, idempotencyKeyOf } from '../../lib/ingress/idempotency.js'

/**
 * The Idempotency-Key header is whatever a caller sent (docs/protocol.md, "Idempotent
 * publishing"). From any header lines, headerValues finds exactly the key's lines, whatever
 * their case, and idempotencyKeyOf takes one well-formed value and refuses anything else
 * with a 400, never another error: in particular two keys are never read as one.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 500
const names = fc.oneof(fc.constantFrom('Idempotency-Key', 'idempotency-key', 'IDEMPOTENCY-KEY', 'content-type', 'idempotency-keys', 'x-idempotency-key'), fc.string({ maxLength: 20 }))
const lines = fc.array(fc.tuple(names, fc.string({ maxLength: 300 })), { maxLength: 8 })

t.test('headerValues: the key\'s lines, in order, case-insensitively; nothing else', async (t) => {
  fc.assert(fc.property(lines, (pairs) => {
    const found = headerValues(pairs.flat(), 'idempotency-key')
    const expected = pairs.filter(([name]) => name.toLowerCase() === 'idempotency-key').map(([, value]) => value)
    return JSON.stringify(found) === JSON.stringify(expected)
  }), { numRuns: NUM_RUNS })
})

t.test('idempotencyKeyOf: one printable value of 1-255 characters is the key; anything else is a 400', async (t) => {
  fc.assert(fc.property(fc.array(fc.string({ maxLength: 300 }), { maxLength: 3 }), (values) => {
    let key: string | undefined
    try {
      key = idempotencyKeyOf(values)
    } catch (err) {
      if (!(err instanceof IdempotencyKeyError) || err.statusCode !== 400 || !err.message.startsWith('Idempotency-Key: ')) throw err
      return values.length > 1 || !/^[\x20-\x7E]{1,255}$/.test(values[0])
    }
    return values.length === 0 ? key === undefined : values.length === 1 && key === values[0]
  }), { numRuns: NUM_RUNS })
  t.throws(() => idempotencyKeyOf(['a', 'b']), { message: /given more than once/ })
  t.equal(idempotencyKeyOf(['a, b']), 'a, b', 'one line whose value has a comma is one key')
})

import fc from 'fast-check'
import t from 'tap'
import { queryDecodes } from '../../plugins/malformed-query.js'

// The query check of plugins/malformed-query.ts against what a client may send.
t.test('every query a client builds with URLSearchParams or encodeURIComponent decodes', async (t) => {
  // Whole code points (no lone surrogate, which encodeURIComponent refuses).
  fc.assert(fc.property(fc.array(fc.tuple(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' })), { maxLength: 8 }), (pairs) => {
    return queryDecodes(new URLSearchParams(pairs).toString()) &&
      queryDecodes(pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'))
  }), { numRuns: 1000 })
  t.pass('1000 queries built by clients decode')
})

t.test('a % not followed by two hex digits, or escapes that are not UTF-8, do not decode', async (t) => {
  const hex = '0123456789abcdefABCDEF'
  const notTwoHex = fc.oneof(
    fc.constant(''),
    fc.constantFrom(...'ghzGZ-_.~% &='.split('')),
    fc.tuple(fc.constantFrom(...hex.split('')), fc.constantFrom('', ...'ghzG&= '.split(''))).map(([a, b]) => a + b)
  )
  const part = fc.string({ unit: fc.constantFrom(...'abc=&+-_.~'.split('')), maxLength: 10 })
  fc.assert(fc.property(part, notTwoHex, part, (before, after, rest) =>
    !queryDecodes(`${before}%${after}${rest.startsWith('%') ? rest : `&${rest}`}`)
  ), { numRuns: 1000 })
  t.pass('1000 queries with a broken escape do not')
  // A lead byte without its continuation, a continuation alone, an overlong form, a surrogate.
  for (const bytes of ['%E0%A4', '%80', '%C0%AF', '%ED%A0%80', '%F8%88%80%80%80']) t.notOk(queryDecodes(`x=${bytes}`), bytes)
  t.ok(queryDecodes('x=%E0%A4%A4&y=%25&z=100%25'), 'whole escapes, %25 included')
  t.ok(queryDecodes('no escapes at all, even + and spaces'))
})

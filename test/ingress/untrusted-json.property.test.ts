import t from 'tap'
import fc from 'fast-check'
import { parseUntrustedJson, UntrustedJsonError } from '../../lib/ingress/untrusted-json.js'

/**
 * parseUntrustedJson (lib/ingress/untrusted-json.ts), the parser of every HTTP body and Kafka
 * message value: whatever the text, it answers what JSON.parse answers, or refuses a text
 * whose value holds a prototype key (an own `__proto__`, or a `constructor` object with its
 * own `prototype`), however the key is spelled, or throws a syntax error for what is not JSON.
 */
const KEYS = ['__proto__', 'constructor', 'prototype', 'a', 'b']
const key = fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 }))
const { value } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null), fc.boolean(), fc.integer(), fc.string({ maxLength: 8 }),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.array(fc.tuple(key, tie('value'), fc.boolean(), fc.constantFrom('', ' ', '\n\t')), { maxLength: 4 }).map((entries) => ({ entries }))
  )
}))

/** JSON text of a generated value: keys written plainly or with every character as a \u escape. */
function text (v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(text).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const entries = (v as { entries: Array<[string, unknown, boolean, string]> }).entries
    return `{${entries.map(([k, value, escaped, ws]) => `${escaped ? `"${[...k].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"` : JSON.stringify(k)}${ws}:${ws}${text(value)}`).join(',')}}`
  }
  return JSON.stringify(v)
}

/** Whether a parsed value holds a prototype key anywhere. */
function poisoned (v: unknown): boolean {
  if (v === null || typeof v !== 'object') return false
  if (Object.hasOwn(v, '__proto__')) return true
  const c = (v as Record<string, unknown>).constructor
  if (Object.hasOwn(v, 'constructor') && c !== null && typeof c === 'object' && Object.hasOwn(c, 'prototype')) return true
  return Object.values(v).some(poisoned)
}

t.test('property: JSON.parse\'s answer, or a refusal exactly when a prototype key is in the value', async (t) => {
  let refused = 0
  fc.assert(fc.property(value, (v) => {
    const json = text(v)
    const expected = JSON.parse(json) as unknown
    try {
      const got = parseUntrustedJson(json)
      return !poisoned(expected) && JSON.stringify(got) === JSON.stringify(expected)
    } catch (err) {
      refused++
      return err instanceof UntrustedJsonError && err.kind === 'prototype' && poisoned(expected) && /__proto__/.test(err.message)
    }
  }), { numRuns: 2000 })
  t.ok(refused > 50, `every text answered as JSON.parse answers it, or refused for a prototype key it holds (${refused} refused)`)
})

t.test('property: what is not JSON is a syntax error, never anything else', async (t) => {
  fc.assert(fc.property(fc.string({ maxLength: 40 }), (s) => {
    let valid = true
    try { JSON.parse(s.charCodeAt(0) === 0xfeff ? s.slice(1) : s) } catch { valid = false }
    try {
      parseUntrustedJson(s)
      return valid
    } catch (err) {
      return err instanceof UntrustedJsonError && (err.kind === 'syntax') === !valid
    }
  }), { numRuns: 2000 })
  t.pass('syntax errors exactly for the texts JSON.parse refuses')
})

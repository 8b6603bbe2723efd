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

/**
 * A number literal JSON.parse reads as ±Infinity would reach subscribers as `null`: refused,
 * naming the path of its field. Generated texts mix such literals with finite ones that look
 * alike (`1e308`, `1e-999`, long digit runs that fit, exponents in strings).
 */
const OVERFLOWING = fc.oneof(
  fc.tuple(fc.constantFrom('', '-'), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 309, max: 99999 })).map(([sign, d, e]) => `${sign}${d}e${e}`),
  fc.tuple(fc.constantFrom('', '-'), fc.integer({ min: 309, max: 600 })).map(([sign, n]) => `${sign}9${'0'.repeat(n)}`),
  fc.integer({ min: 306, max: 400 }).map((e) => `1000e+${e}`),
  fc.constant('1.8e308')
)
const FINITE = fc.oneof(
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => JSON.stringify(n)),
  fc.constantFrom('1e308', '-1.7e308', '1e-999', '0e999', '1E+005', `1${'0'.repeat(150)}`, `0.${'1'.repeat(400)}`)
)
interface Tree { leaf?: string, overflow?: boolean, items?: Tree[], fields?: Array<[string, Tree]> }
const { tree } = fc.letrec<{ tree: Tree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    FINITE.map((leaf) => ({ leaf })),
    OVERFLOWING.map((leaf) => ({ leaf, overflow: true })),
    fc.constantFrom('"e12345"', `"${'7'.repeat(120)}"`, 'null', 'true').map((leaf) => ({ leaf })),
    fc.array(tie('tree'), { maxLength: 3 }).map((items) => ({ items })),
    fc.uniqueArray(fc.tuple(fc.constantFrom('a', 'b', 'price', 'x y'), tie('tree')), { maxLength: 3, selector: ([k]) => k }).map((fields) => ({ fields }))
  )
}))

function treeText (n: Tree): string {
  if (n.leaf !== undefined) return n.leaf
  if (n.items !== undefined) return `[${n.items.map(treeText).join(',')}]`
  return `{${(n.fields ?? []).map(([k, v]) => `${JSON.stringify(k)}:${treeText(v)}`).join(',')}}`
}

/** Paths of every overflowing literal, in document order. */
function overflowPaths (n: Tree, path: string[] = []): string[] {
  if (n.overflow === true) return [path.length === 0 ? '(value)' : path.join('.')]
  if (n.items !== undefined) return n.items.flatMap((item, i) => overflowPaths(item, [...path, String(i)]))
  return (n.fields ?? []).flatMap(([k, v]) => overflowPaths(v, [...path, k]))
}

t.test('property: a number out of range is refused, naming the first field that holds one; every other number is read as JSON.parse reads it', async (t) => {
  let refused = 0
  fc.assert(fc.property(tree, (n) => {
    const json = treeText(n)
    const expected = overflowPaths(n)
    try {
      const got = parseUntrustedJson(json)
      return expected.length === 0 && JSON.stringify(got) === JSON.stringify(JSON.parse(json))
    } catch (err) {
      refused++
      return err instanceof UntrustedJsonError && err.kind === 'number' && expected.length > 0 &&
        err.message.startsWith(`${expected[0]}: a number beyond`)
    }
  }), { numRuns: 2000 })
  t.ok(refused > 200, `refused exactly the texts with a number out of range (${refused} of 2000)`)
})

t.test('a number out of range nested far deeper than any payload may be is found without overflowing the stack', async (t) => {
  const depth = 100_000
  const text = `${'['.repeat(depth)}1e999${']'.repeat(depth)}`
  let caught: unknown
  try { parseUntrustedJson(text) } catch (err) { caught = err }
  // JSON.parse itself may give up on such depth (a syntax-kind error); what matters is no crash and no value.
  t.ok(caught instanceof UntrustedJsonError, `refused: ${(caught as Error)?.message?.slice(0, 60)}`)
})

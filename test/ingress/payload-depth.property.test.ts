import fc from 'fast-check'
import t from 'tap'
import { deepestPath, MAX_PAYLOAD_DEPTH } from '../../lib/ingress/publish-limits.js'

/**
 * Every payload of every publish is walked for its depth (docs/protocol.md, Limits). For any
 * value, deepestPath refuses exactly the ones nesting deeper than the limit, and the key it
 * names is one under which the value is that deep. Checked against a plain recursive
 * measure, on values built around chains of objects and arrays up to 90 levels deep.
 */
const depthOf = (value: unknown): number => {
  if (typeof value !== 'object' || value === null) return 0
  let deepest = 0
  for (const child of Object.values(value)) deepest = Math.max(deepest, depthOf(child))
  return 1 + deepest
}

const leaf = fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.constant(null), fc.boolean())
/** A chain of objects and arrays `length` deep, with a leaf or nothing at its end. */
const chain = fc.array(fc.tuple(fc.constantFrom('object', 'array'), fc.string({ maxLength: 4 })), { maxLength: 90 }).chain((links) =>
  leaf.map((end) => links.reduceRight<unknown>((inner, [kind, key]) => kind === 'array' ? [1, inner] : { [key]: inner, sibling: 'x' }, end)))
const payload = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 6 }), fc.oneof(chain, leaf, fc.jsonValue({ maxDepth: 3 })), { maxKeys: 5 }),
  fc.array(fc.oneof(chain, leaf), { maxLength: 4 })
)

t.test('deepestPath refuses exactly what nests deeper than the limit, and names a key that does', async (t) => {
  fc.assert(fc.property(payload, fc.constantFrom(1, 2, 3, 10, MAX_PAYLOAD_DEPTH), (value, max) => {
    const found = deepestPath(value, max)
    const depth = depthOf(value)
    if ((found === null) !== (depth <= max)) throw new Error(`depth ${depth}, limit ${max}, found ${String(found)}`)
    if (found !== null && 1 + depthOf((value as Record<string, unknown>)[found]) <= max) throw new Error(`${found} is not too deep`)
  }), { numRuns: 2000 })
  t.pass('agrees with the plain measure')
})

t.test('deepestPath on the limit\'s edges, and far beyond it without a deep stack', async (t) => {
  const nest = (levels: number): unknown => { let v: unknown = {}; for (let i = 1; i < levels; i++) v = { a: v }; return v }
  t.equal(deepestPath(nest(MAX_PAYLOAD_DEPTH), MAX_PAYLOAD_DEPTH), null, 'exactly the limit is allowed')
  t.equal(deepestPath(nest(MAX_PAYLOAD_DEPTH + 1), MAX_PAYLOAD_DEPTH), 'a', 'one level more is refused')
  t.equal(deepestPath({ ok: 1, deep: nest(200_000) }, MAX_PAYLOAD_DEPTH), 'deep', 'two hundred thousand levels: named, no stack overflow')
  t.equal(deepestPath([0, [nest(MAX_PAYLOAD_DEPTH)]], MAX_PAYLOAD_DEPTH), '1', 'in an array, the index')
  t.equal(deepestPath({ '': { x: nest(MAX_PAYLOAD_DEPTH) } }, MAX_PAYLOAD_DEPTH), '', 'an empty top-level key is named as itself, not a key below it')
  t.equal(deepestPath({}, 0), '', 'a limit below one refuses the object itself')
  t.equal(deepestPath('text', 1), null, 'not an object: nothing to refuse')
})

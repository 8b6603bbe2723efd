import fc from 'fast-check'
import t from 'tap'
import { ClientFrames, FrameError, parseClientFrame } from '../../lib/transport/protocol.js'

/**
 * parseClientFrame is the first thing every client text frame meets (docs/protocol.md, WebSocket).
 * Whatever the text, it returns a frame of a known type or throws FrameError(bad_request),
 * carrying the frame's id when the frame had a usable one; nothing else escapes.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 500
const TYPES = Object.keys(ClientFrames)

/** The outcome of one parse: the frame's type, or the error's code and id; throws anything else. */
function outcome (text: string): { type: string } | { code: string, id: unknown } {
  try {
    const frame = parseClientFrame(text)
    return { type: frame.type }
  } catch (err) {
    if (!(err instanceof FrameError)) throw err
    return { code: err.code, id: err.id }
  }
}

/** Values a hostile client would put anywhere: JSON of every kind, long strings, odd numbers. */
const anyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.constantFrom(-1, 0, 1.5, 2 ** 53, -(2 ** 60), 1e308, '', '__proto__', 'constructor', [], {}, null, true)
)

/** Frames close to valid ones: a known type (or a near miss), an id, and payload fields of any kind. */
const frameLike = fc.record({
  type: fc.oneof(fc.constantFrom(...TYPES), fc.constantFrom('__proto__', 'toString', 'hasOwnProperty', 'Subscribe', 'subscribe '), fc.string()),
  id: fc.option(anyValue, { nil: undefined }),
  payload: fc.oneof(
    anyValue,
    fc.record({
      channels: fc.oneof(anyValue, fc.array(fc.oneof(fc.string({ maxLength: 210 }), fc.constantFrom('room:a', 'user:1', 'admin', 'a,b', 'x;y')), { maxLength: 20 })),
      since: fc.oneof(anyValue, fc.dictionary(fc.string({ maxLength: 20 }), fc.record({ offset: anyValue, epoch: fc.option(anyValue, { nil: undefined }) }, { requiredKeys: [] }))),
      rewind: anyValue,
      room: anyValue,
      channel: anyValue,
      token: anyValue
    }, { requiredKeys: [] })
  )
}, { requiredKeys: [] })

function check (text: string): void {
  const result = outcome(text)
  if ('type' in result) {
    if (!TYPES.includes(result.type)) throw new Error(`parsed to an unknown type ${result.type}`)
    return
  }
  if (result.code !== 'bad_request') throw new Error(`code ${result.code}`)
  // The id of a rejected frame is echoed only when it is one a reply may carry.
  if (result.id !== undefined && !usableId(result.id)) throw new Error(`unusable id echoed: ${JSON.stringify(result.id)}`)
}

/** An id a reply may carry: a string of at most 200 characters, or a number JSON carries exactly (within ±(2^53−1)). */
const usableId = (id: unknown): boolean =>
  (typeof id === 'string' && id.length <= 200) || (typeof id === 'number' && Math.abs(id) <= Number.MAX_SAFE_INTEGER)

t.test('any text: a known frame or bad_request, never another throw', async (t) => {
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 2000 }), (text) => { check(text) }), { numRuns: NUM_RUNS })
  fc.assert(fc.property(fc.json({ maxDepth: 6 }), (text) => { check(text) }), { numRuns: NUM_RUNS })
  t.pass('no escape')
})

t.test('frame-like objects: a known frame or bad_request with the frame\'s own id', async (t) => {
  fc.assert(fc.property(frameLike, (frame) => {
    const text = JSON.stringify(frame)
    check(text)
    const result = outcome(text)
    const id = frame.id
    if ('code' in result && usableId(id) && result.id !== id) {
      throw new Error(`error for frame with id ${JSON.stringify(id)} carries ${JSON.stringify(result.id)}`)
    }
    if ('code' in result && !usableId(id) && result.id !== undefined) throw new Error(`refused id ${JSON.stringify(id)} echoed`)
    if ('type' in result && id !== undefined && !usableId(id)) throw new Error(`frame with unusable id ${JSON.stringify(id)} accepted`)
  }), { numRuns: NUM_RUNS * 2 })
  t.pass('no escape')
})

t.test('an id a reply cannot carry exactly is refused and not echoed; the others are echoed as sent', async (t) => {
  for (const id of [2 ** 53, -(2 ** 53), 1e300, 'x'.repeat(201)]) {
    t.match(outcome(JSON.stringify({ type: 'system:ping', id })), { code: 'bad_request', id: undefined }, `id ${String(id).slice(0, 20)}`)
  }
  t.match(outcome('{"type":"system:ping","id":9007199254740993}'), { code: 'bad_request', id: undefined }, 'rounded on parsing: refused')
  fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.maxSafeInteger(), fc.double({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, noNaN: true })), (id) => {
    if (!('type' in outcome(JSON.stringify({ type: 'system:ping', id })))) throw new Error(`usable id ${JSON.stringify(id)} refused`)
    if ((outcome(JSON.stringify({ type: 'nope', id })) as { id: unknown }).id !== JSON.parse(JSON.stringify(id))) throw new Error(`id ${JSON.stringify(id)} not echoed`)
  }), { numRuns: NUM_RUNS })
})

t.test('deeply nested frames are answered, not overflowed', async (t) => {
  const nest = (depth: number, leaf: string) => '{"a":'.repeat(depth) + leaf + '}'.repeat(depth)
  fc.assert(fc.property(fc.integer({ min: 1, max: 20_000 }), fc.constantFrom(...TYPES), (depth, type) => {
    check(`{"type":${JSON.stringify(type)},"id":"d","payload":${nest(depth, '1')}}`)
    check(`{"type":${JSON.stringify(type)},"payload":{"channels":[${'['.repeat(depth)}${']'.repeat(depth)}]}}`)
  }), { numRuns: 50 })
  t.pass('no escape')
})

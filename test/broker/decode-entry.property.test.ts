import fc from 'fast-check'
import t from 'tap'
import { EncodedEvent, payloadTextOf, type PublishedEvent } from '../../lib/core/event.js'
import { decodeEntry, entryBody } from '../../lib/broker/redis-layout.js'

/**
 * decodeEntry reads an entry's type and keeps its payload as text, parsed only when asked
 * for (lib/core/event.ts eventWithPayloadText). Checked against what it did before, parsing
 * the whole body (the oracle below): for every entry a gateway writes, the same event; for
 * any text at all, never an event the oracle would read differently, and never a throw but
 * "not a broker entry".
 */
const NUM_RUNS = 2000

/** The decoder before: JSON.parse of the whole body. */
function oracle (entry: string): { epoch: string, offset: number, ms: number, type: string, payload: unknown } | undefined {
  const a = entry.indexOf(',')
  const b = entry.indexOf(',', a + 1)
  const c = entry.indexOf(',', b + 1)
  if (a <= 0 || b < 0 || c < 0) return undefined
  const offset = Number(entry.slice(a + 1, b))
  const ms = Number(entry.slice(b + 1, c))
  let body: { type?: unknown, payload?: unknown }
  try {
    body = JSON.parse(entry.slice(c + 1))
  } catch {
    return undefined
  }
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(ms) || Math.abs(ms) > 8.64e15 || typeof body?.type !== 'string' ||
    typeof body.payload !== 'object' || body.payload === null || Array.isArray(body.payload)) return undefined
  return { epoch: entry.slice(0, a), offset, ms, type: body.type, payload: body.payload }
}

function decoded (entry: string): PublishedEvent | undefined {
  try {
    return decodeEntry('room:a', entry)
  } catch (err) {
    if ((err as Error).message !== 'not a broker entry') throw new Error(`threw ${String(err)} for ${JSON.stringify(entry)}`)
    return undefined
  }
}

const text = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom('', '"', '\\', '\\"', ',"payload":', '","payload":{}}', '\ud800', '\u2028', 'order:created'),
  fc.string({ unit: fc.constantFrom('"', '\\', ',', ':', 'p', '{', '}', 'u', '0', '\u0000'), maxLength: 20 })
)
const payload = fc.dictionary(text, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 })
const written = fc.record({
  epoch: fc.stringMatching(/^[0-9a-z]{1,24}$/),
  offset: fc.oneof(fc.nat({ max: 1000 }), fc.maxSafeNat()),
  ms: fc.integer({ min: 0, max: 8.64e15 }),
  type: text,
  payload
}).map((e) => ({ ...e, entry: `${e.epoch},${e.offset},${e.ms},${entryBody(e.type, JSON.stringify(e.payload))}` }))

t.test('every entry a gateway writes decodes to its event, the payload text kept as written', async (t) => {
  fc.assert(fc.property(written, (e) => {
    const event = decoded(e.entry)
    if (event === undefined) throw new Error(`refused ${e.entry}`)
    const json = JSON.stringify(e.payload)
    if (event.epoch !== e.epoch || event.offset !== e.offset || event.type !== e.type || event.ts !== new Date(e.ms).toISOString()) {
      throw new Error(`place or type differ for ${e.entry}`)
    }
    if (payloadTextOf(event) !== json) throw new Error(`payload text differs: ${String(payloadTextOf(event))}`)
    if (JSON.stringify(event.payload) !== json) throw new Error('the payload parsed on demand differs')
    const whole = JSON.stringify({ type: e.type, channel: 'room:a', offset: e.offset, payload: e.payload, ts: event.ts })
    if (new EncodedEvent(event).ws !== whole) throw new Error('its frame differs from the whole frame encoded')
  }), { numRuns: NUM_RUNS })
  t.pass('equal')
})

t.test('any text: an event only where the whole body parses to the same one, and only "not a broker entry" otherwise', async (t) => {
  // Entries a gateway writes, cut, spliced or with a character changed, and any text at all.
  const mangled = fc.oneof(
    fc.tuple(written, fc.nat(), fc.nat(), text).map(([e, at, length, inserted]) => {
      const cut = at % (e.entry.length + 1)
      return e.entry.slice(0, cut) + inserted + e.entry.slice(Math.min(e.entry.length, cut + (length % 4)))
    }),
    fc.tuple(fc.stringMatching(/^[0-9a-z]{1,4}$/), text, text, text).map(([epoch, offset, ms, body]) => `${epoch},${offset},${ms},${body}`),
    text
  )
  let accepted = 0
  fc.assert(fc.property(mangled, (entry) => {
    const event = decoded(entry)
    if (event === undefined) return
    accepted++
    const text = payloadTextOf(event)
    if (text === undefined) throw new Error('no payload text kept')
    let payloadParses = true
    try { JSON.parse(text) } catch { payloadParses = false }
    // Its payload's JSON is taken as written: only where that text parses does the oracle have a say.
    if (!payloadParses) return
    const expected = oracle(entry)
    if (expected === undefined) throw new Error(`decoded what the whole-body parse refuses: ${JSON.stringify(entry)}`)
    if (event.epoch !== expected.epoch || event.offset !== expected.offset || event.type !== expected.type ||
      event.ts !== new Date(expected.ms).toISOString() || JSON.stringify(event.payload) !== JSON.stringify(expected.payload)) {
      throw new Error(`decoded differently from the whole-body parse: ${JSON.stringify(entry)}`)
    }
  }), { numRuns: NUM_RUNS })
  t.ok(accepted > 0, `some of the mangled entries still decoded (${accepted}), so both sides were compared`)
})

t.test('examples', async (t) => {
  const event = decodeEntry('room:a', 'e1,3,0,{"type":"a\\"b","payload":{"x":[1,{"y":"}"}]}}')
  t.same({ type: event.type, offset: event.offset, epoch: event.epoch, ts: event.ts }, { type: 'a"b', offset: 3, epoch: 'e1', ts: '1970-01-01T00:00:00.000Z' })
  t.equal(payloadTextOf(event), '{"x":[1,{"y":"}"}]}')
  t.same(event.payload, { x: [1, { y: '}' }] })
  t.same({ ...event }.payload, { x: [1, { y: '}' }] }, 'a copy of the event has the payload')
  event.payload = { other: true }
  t.equal(payloadTextOf(event), undefined, 'a payload set anew is no longer the text')
  t.equal(new EncodedEvent(event).sse, '{"channel":"room:a","offset":3,"payload":{"other":true},"ts":"1970-01-01T00:00:00.000Z"}', 'and frames say the new one')
  for (const junk of ['', 'e1,3,0,', 'e1,3,0,{}', 'e1,3,0,{"type":1,"payload":{}}', 'e1,3,0,{"type":"a","payload":[]}', 'e1,3,0,{"type":"a","payload":null}',
    'e1,3,0,{"type":"a\\x","payload":{}}', 'e1,3,0,{"type":"a","payload":{}', 'e1,x,0,{"type":"a","payload":{}}', 'e1,3,9e15,{"type":"a","payload":{}}',
    ',3,0,{"type":"a","payload":{}}', 'e1,3,0, {"type":"a","payload":{}}']) {
    t.throws(() => decodeEntry('room:a', junk), { message: 'not a broker entry' }, JSON.stringify(junk))
  }
})

import fc from 'fast-check'
import t from 'tap'
import { EncodedEvent, jsonString, sharedEncodingOf, type PublishedEvent } from '../../lib/core/event.js'
import { checkDrafts } from '../../lib/ingress/publish-limits.js'
import { decodeEntry, entryBody, payloadJsonOfEntry } from '../../lib/broker/redis-layout.js'

/**
 * A payload is encoded once (by checkDrafts, or by the broker) and every later text is
 * written around that JSON: a Redis entry's body, the WebSocket frame, the SSE data, and
 * the payload's text taken back out of an entry another instance wrote. Each must be exactly
 * what JSON.stringify gives of the whole, for any type, channel and payload (event types
 * and payloads are any text a publisher sends: quotes, backslashes, `,"payload":`, lone
 * surrogates, control characters).
 */
const NUM_RUNS = 1500

const text = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('', '"', '\\', ',"payload":', '","payload":{}}', '\ud800', '\u2028', 'order:created', 'payload'),
  fc.string({ unit: fc.constantFrom('"', '\\', ',', ':', 'p', '{', '}', '\u0000'), maxLength: 20 })
)
const payload = fc.dictionary(text, fc.jsonValue({ maxDepth: 4 }), { maxKeys: 8 }) as fc.Arbitrary<Record<string, unknown>>
const event: fc.Arbitrary<PublishedEvent> = fc.record({
  channel: text,
  type: text,
  payload,
  offset: fc.nat(),
  epoch: fc.stringMatching(/^[A-Za-z0-9_-]{1,24}$/),
  ts: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date(8.64e15 - 1) }).map((d) => d.toISOString())
})

const wholeFrame = (e: PublishedEvent): string =>
  JSON.stringify({ type: e.type, channel: e.channel, offset: e.offset, payload: e.payload, ts: e.ts })
const wholeSse = (e: PublishedEvent): string =>
  JSON.stringify({ channel: e.channel, offset: e.offset, payload: e.payload, ts: e.ts })

t.test('the frames written around a payload JSON are what JSON.stringify gives of the whole frame', async (t) => {
  fc.assert(fc.property(event, fc.boolean(), (e, given) => {
    const encoded = new EncodedEvent(e, given ? JSON.stringify(e.payload) : undefined)
    if (encoded.ws !== wholeFrame(e)) throw new Error(`ws frame differs: ${encoded.ws}`)
    if (encoded.sse !== wholeSse(e)) throw new Error(`sse data differs: ${encoded.sse}`)
    if (!encoded.wsBytes.equals(Buffer.from(wholeFrame(e)))) throw new Error('ws bytes differ')
  }), { numRuns: NUM_RUNS })
  t.pass('equal')
})

t.test('a shared (long-lived) encoding writes the same bytes, whichever is asked first', async (t) => {
  fc.assert(fc.property(event, fc.boolean(), fc.constantFrom('wire', 'bytes', 'text'), (e, given, first) => {
    const encoded = sharedEncodingOf({ ...e }, given ? JSON.stringify(e.payload) : undefined)
    if (first === 'bytes') void encoded.wsBytes
    if (first === 'text') void encoded.ws
    const whole = Buffer.from(wholeFrame(e))
    if (!encoded.wsBytes.equals(whole)) throw new Error('ws bytes differ')
    const wire = encoded.wsFrameBytes
    if (!wire.subarray(wire.length - whole.length).equals(whole)) throw new Error('frame payload differs')
    if (encoded.ws !== wholeFrame(e) || encoded.sse !== wholeSse(e)) throw new Error('texts differ')
  }), { numRuns: NUM_RUNS })
  t.pass('equal')
})

t.test('a shared encoding\'s frame has memory of its own: a kept slice of Node\'s pool would keep all 8 KB of it', async (t) => {
  const e: PublishedEvent = { channel: 'product:1', type: 'inventory:updated', payload: { stock: 3 }, offset: 7, epoch: 'e', ts: new Date(0).toISOString() }
  const kept = sharedEncodingOf(e).wsFrameBytes
  t.equal(kept.buffer.byteLength, kept.length, 'its own ArrayBuffer, exactly the frame')
  t.equal(sharedEncodingOf(e).wsBytes.buffer, kept.buffer, 'the bytes without the header are a view of it, not a copy')
  t.equal(sharedEncodingOf(e), sharedEncodingOf(e), 'one encoding per event object')
  const fanOut = new EncodedEvent(e).wsFrameBytes
  t.ok(fanOut.buffer.byteLength > fanOut.length, 'a fan-out\'s frame, gone after the turn, is a slice of the pool (cheaper to make)')
})

t.test('the frame uses the payload JSON it is given, and encodes the payload once for both transports', async (t) => {
  const e: PublishedEvent = { channel: 'room:a', type: 'note', payload: { a: 1 }, offset: 3, epoch: 'e', ts: new Date(0).toISOString() }
  t.equal(new EncodedEvent(e, '{"given":true}').ws, '{"type":"note","channel":"room:a","offset":3,"payload":{"given":true},"ts":"1970-01-01T00:00:00.000Z"}')
  let encodings = 0
  const counted = { toJSON: () => { encodings++; return { a: 1 } } } as unknown as Record<string, unknown>
  const once = new EncodedEvent({ ...e, payload: counted })
  t.equal(once.ws, '{"type":"note","channel":"room:a","offset":3,"payload":{"a":1},"ts":"1970-01-01T00:00:00.000Z"}')
  t.equal(once.sse, '{"channel":"room:a","offset":3,"payload":{"a":1},"ts":"1970-01-01T00:00:00.000Z"}')
  t.equal(encodings, 1, 'one encoding of the payload for the WebSocket frame and the SSE data')
})

t.test('an entry body is JSON.stringify({ type, payload }), and its payload text comes back out as written', async (t) => {
  fc.assert(fc.property(text, payload, fc.nat(), (type, p, offset) => {
    const json = JSON.stringify(p)
    const body = entryBody(type, json)
    if (body !== JSON.stringify({ type, payload: p })) throw new Error(`body differs: ${body}`)
    const entry = `ep0,${offset},1700000000000,${body}`
    if (payloadJsonOfEntry(entry) !== json) throw new Error(`payload text differs: ${String(payloadJsonOfEntry(entry))}`)
    const decoded = decodeEntry('room:a', entry)
    if (JSON.stringify(decoded.payload) !== json) throw new Error('decoded payload encodes differently')
  }), { numRuns: NUM_RUNS })
  t.equal(payloadJsonOfEntry('ep0,1,2,{"type":"x"}'), undefined, 'no payload key')
  t.equal(payloadJsonOfEntry('ep0,1,2,{"type":"x","payload":{}} '), undefined, 'not an entry body that ends the entry')
})

t.test('checkDrafts leaves each draft its payload JSON, one encoding for drafts sharing a payload', async (t) => {
  let encodings = 0
  const shared = { toJSON: () => { encodings++; return { orderId: 'o1', total: 5 } } } as unknown as Record<string, unknown>
  const drafts = [
    { channel: 'user:u1', type: 'order:created', payload: shared },
    { channel: 'admin', type: 'admin:order:created', payload: shared },
    { channel: 'room:a', type: 'note', payload: { text: 'é"\\' } }
  ]
  checkDrafts(drafts, { eventMaxBytes: 1024, publishMaxBytes: 4096 })
  t.same(drafts.map((d) => (d as { payloadJson?: string }).payloadJson), [
    '{"orderId":"o1","total":5}', '{"orderId":"o1","total":5}', JSON.stringify({ text: 'é"\\' })
  ])
  t.equal(encodings, 1, 'the shared payload was encoded once')
})

t.test('jsonString is JSON.stringify of any string: quotes, backslashes, control characters, surrogates alone or paired', async (t) => {
  const unit = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 30 }),
    fc.string({ unit: fc.constantFrom('a', ':', '"', '\\', '\u0000', '\u001f', '\u007f', '\u2028', '\ud800', '\udfff', '\ud83d\ude00', 'é'), maxLength: 12 })
  )
  fc.assert(fc.property(unit, (text) => {
    if (jsonString(text) !== JSON.stringify(text)) throw new Error(`differs for ${JSON.stringify(text)}: ${jsonString(text)}`)
  }), { numRuns: NUM_RUNS * 4 })
  // The quoted path and the escaping path both taken, and the same text as JSON.stringify's.
  t.equal(jsonString('order:o-1'), '"order:o-1"')
  t.equal(jsonString('a"b\\c\n'), '"a\\"b\\\\c\\n"')
  t.equal(jsonString('\ud800'), '"\\ud800"')
  t.equal(jsonString('\ud83d\ude00'), '"\ud83d\ude00"')
})

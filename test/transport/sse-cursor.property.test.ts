import fc from 'fast-check'
import t from 'tap'
import { decodeCursor, encodeCursor, encodePositions } from '../../lib/transport/sse-cursor.js'
import { post, serviceToken, SseClient, startServer, token } from '../support/helper.js'

/**
 * The SSE `Last-Event-ID` cursor comes back from the client as it likes (docs/protocol.md, SSE).
 * decodeCursor answers any string with null or positions that are safe to resume from;
 * what encodeCursor wrote decodes to the same positions.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 1000
const channelName = fc.stringMatching(/^[A-Za-z0-9_\-:.@]{1,200}$/)
const epoch = fc.stringMatching(/^[A-Za-z0-9_\-:.]{0,40}$/)

/** Strings close to a cursor: the prefix, then parts of channel, epoch and offset, some of them wrong. */
const cursorLike = fc.array(fc.tuple(
  fc.oneof(channelName, fc.string({ maxLength: 30 })),
  fc.oneof(epoch, fc.string({ maxLength: 10 })),
  fc.oneof(fc.nat().map(String), fc.constantFrom('-1', '1.5', '1e3', '0x10', '', ' 1', 'NaN', 'Infinity', '9007199254740993', '00'), fc.string({ maxLength: 8 }))
), { maxLength: 10 }).chain((parts) => fc.constantFrom(
  `v1;${parts.map((p) => p.join(',')).join(';')}`,
  `v1;${parts.map((p) => p.join(',')).join(';')};`,
  `v2;${parts.map((p) => p.join(',')).join(';')}`
))

function checkDecoded (cursor: string): void {
  const positions = decodeCursor(cursor)
  if (positions === null) return
  for (const [channel, p] of positions) {
    // A name holds `,` or `;` only as written escaped (cursorName): it is looked up, never split again.
    if (typeof channel !== 'string' || channel === '') throw new Error(`channel ${JSON.stringify(channel)}`)
    if (!Number.isSafeInteger(p.offset) || p.offset < 0) throw new Error(`offset ${p.offset}`)
    if (typeof p.epoch !== 'string') throw new Error('epoch is not a string')
  }
}

t.test('any string decodes to null or to positions safe to resume from', async (t) => {
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 500 }), checkDecoded), { numRuns: NUM_RUNS })
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 500 }).map((s) => `v1;${s}`), checkDecoded), { numRuns: NUM_RUNS })
  fc.assert(fc.property(cursorLike, checkDecoded), { numRuns: NUM_RUNS })
  t.pass('no escape')
})

t.test('an oversized cursor is refused, not parsed', async (t) => {
  fc.assert(fc.property(fc.integer({ min: 64 * 1024 - 10, max: 200_000 }), (length) => {
    const cursor = `v1;${'room:a,e,1;'.repeat(Math.ceil(length / 11))}`.slice(0, length)
    const decoded = decodeCursor(cursor)
    if (cursor.length > 64 * 1024 && decoded !== null) throw new Error(`a ${cursor.length}-character cursor was parsed`)
    checkDecoded(cursor)
  }), { numRuns: 50 })
  t.pass('bounded')
})

t.test('what encodeCursor writes decodes to the same positions', async (t) => {
  // Names outside the alphabet too: a user's own channel is `user:<sub>`, whatever the sub.
  const anyName = fc.oneof(channelName, fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), fc.constantFrom('user:a,b;c', 'user:%0041', 'user:x\nevent: y', 'user:%'))
  const positions = fc.uniqueArray(fc.tuple(anyName, epoch, fc.maxSafeNat()), { selector: (p) => p[0], maxLength: 20 })
  fc.assert(fc.property(positions, (entries) => {
    const map = new Map(entries.map(([channel, e, offset]) => [channel, { epoch: e, offset }]))
    const cursor = encodeCursor(map)
    // One `id:` line (no CR, LF or NUL), and one `;` between positions, two `,` in each.
    if (/[\r\n\0]/.test(cursor)) throw new Error(`cursor ${JSON.stringify(cursor)} would not stay one id line`)
    const parts = cursor.slice(3).split(';')
    if (entries.length > 0 && (parts.length !== entries.length || parts.some((part) => part.split(',').length !== 3))) throw new Error(`cursor ${JSON.stringify(cursor)} does not split back`)
    for (const [channel] of entries) {
      if (/^[A-Za-z0-9_\-:.@]+$/.test(channel) && !cursor.includes(`${channel},`)) throw new Error(`a name of the alphabet was not written as it is: ${channel}`)
    }
    const decoded = decodeCursor(cursor)
    if (decoded === null) throw new Error('own cursor refused')
    if (JSON.stringify([...decoded]) !== JSON.stringify([...map])) throw new Error(`round trip changed ${JSON.stringify([...map])} into ${JSON.stringify([...decoded])}`)
    // A stream keeps its positions flat (sse-connection.ts): the same cursor from them.
    const flat = entries.flatMap(([channel, e, offset]) => [channel, e, offset])
    if (encodePositions(flat) !== encodeCursor(map)) throw new Error(`flat positions encode as ${encodePositions(flat)}`)
  }), { numRuns: NUM_RUNS })
  t.pass('round trip')
})

t.test('any Last-Event-ID on a live stream: 200, system:connected, offsets that never go back, then live events', async (t) => {
  const { url } = await startServer(t, { HTTP_RATE_LIMIT_PER_MINUTE: 1_000_000 })
  const publish = async (channel: string, payload: Record<string, unknown>) => {
    const res = await post(`${url}/realtime/publish`, serviceToken(), { channel, type: 't', payload })
    if (res.status !== 202) throw new Error(`publish answered ${res.status}`)
    return res.body.positions[channel] as { offset: number, epoch: string }
  }
  for (let i = 0; i < 5; i++) await publish('event:1', { i })
  const { epoch } = await publish('room:a', { i: 0 })

  /** Cursors naming the stream's channels with the real epoch or another, at offsets around the real ones. */
  const nearCursor = fc.array(fc.tuple(
    fc.constantFrom('room:a', 'event:1', 'user:42', 'room:other'),
    fc.oneof({ weight: 3, arbitrary: fc.constant(epoch) }, { weight: 1, arbitrary: fc.constantFrom('', 'x', `${epoch}x`) }),
    fc.oneof(fc.integer({ min: 0, max: 200 }).map(String), fc.constantFrom('-1', '1.5', 'abc', '99999999999999999'))
  ), { maxLength: 4 }).map((parts) => `v1;${parts.map((p) => p.join(',')).join(';')}`)
  const headerValue = fc.oneof(nearCursor, cursorLike, fc.stringMatching(/^[\x20-\x7e]{1,300}$/))

  let marker = 0
  await fc.assert(fc.asyncProperty(fc.oneof(
    headerValue.map((value) => ({ header: value })),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 300 }).map((value) => ({ query: value }))
  ), async (resume) => {
    const query = 'query' in resume ? `&lastEventId=${encodeURIComponent(resume.query)}` : ''
    const headers: Record<string, string> = 'header' in resume ? { 'last-event-id': resume.header } : {}
    const sse = await SseClient.open(t, `${url}/sse?channels=room:a,event:1&token=${token('42')}${query}`, headers)
    try {
      if (sse.status !== 200) throw new Error(`answered ${sse.status}: ${sse.body.slice(0, 200)}`)
      const [first] = await sse.waitFor(1)
      if (first.event !== 'system:connected') throw new Error(`first event ${first.event}`)
      const n = ++marker
      await publish('room:a', { marker: n })
      await sse.waitFor(1, (e) => e.data?.payload?.marker === n)
      const offsets = sse.events.filter((e) => e.data?.channel === 'room:a').map((e) => e.data.offset as number)
      if (offsets.some((o, i) => i > 0 && o <= offsets[i - 1])) throw new Error(`offsets went back: ${offsets.join(',')}`)
    } finally {
      sse.close()
    }
  }), { numRuns: 40 })
  t.pass('every stream answered')
})

t.test('a token whose sub is outside the channel alphabet: its stream\'s ids stay one line and resume every channel', async (t) => {
  const { url } = await startServer(t, { HTTP_RATE_LIMIT_PER_MINUTE: 1_000_000 })
  // Its own channel, user:<sub>, is in every event's id. A sub is the token issuer's to choose
  // (an IdP's "auth0|…", a name with a space): it must not end the id line, forge an `event:`
  // line, or break the cursor's `,` and `;` so that no channel of the stream resumes.
  const subs = ['jane doe', 'a,b;c', 'x\nevent: forged\ndata: {}', 'auth0|5f7c', '%0041', 'ünï☃', 'tab\there\r']
  for (const [n, sub] of subs.entries()) {
    const channel = `room:odd-sub-${n}`
    const publish = async (i: number) => {
      const res = await post(`${url}/realtime/publish`, serviceToken(), { channel, type: 'odd:event', payload: { i } })
      if (res.status !== 202) throw new Error(`publish answered ${res.status}`)
    }
    const first = await SseClient.open(t, `${url}/sse?channels=${channel}&token=${token(sub)}`)
    t.equal(first.status, 200, `${JSON.stringify(sub)}: the stream opens`)
    await first.waitFor(1)
    await publish(1)
    const [event] = await first.waitFor(1, (e) => e.data?.channel === channel)
    first.close()
    t.equal(event.event, 'odd:event', `${JSON.stringify(sub)}: the event keeps its own type`)
    t.ok(event.id?.startsWith('v1;'), `${JSON.stringify(sub)}: with a cursor`)
    await publish(2)
    await publish(3)
    const resumed = await SseClient.open(t, `${url}/sse?channels=${channel}&token=${token(sub)}`, { 'last-event-id': event.id ?? '' })
    await resumed.waitFor(3) // system:connected and the two missed events
    resumed.close()
    t.same(resumed.events.map((e) => e.event), ['system:connected', 'odd:event', 'odd:event'], `${JSON.stringify(sub)}: no system:recovery`)
    t.same(resumed.events.slice(1).map((e) => e.data.payload.i), [2, 3], `${JSON.stringify(sub)}: what it missed, once, in order`)
  }
})

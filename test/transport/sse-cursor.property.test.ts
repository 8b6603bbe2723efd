import fc from 'fast-check'
import t from 'tap'
import { decodeCursor, encodeCursor } from '../../lib/transport/sse-cursor.js'

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
    if (channel === '' || channel.includes(',') || channel.includes(';')) throw new Error(`channel ${JSON.stringify(channel)}`)
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
  const positions = fc.uniqueArray(fc.tuple(channelName, epoch, fc.maxSafeNat()), { selector: (p) => p[0], maxLength: 20 })
  fc.assert(fc.property(positions, (entries) => {
    const map = new Map(entries.map(([channel, e, offset]) => [channel, { epoch: e, offset }]))
    const decoded = decodeCursor(encodeCursor(map))
    if (decoded === null) throw new Error('own cursor refused')
    if (JSON.stringify([...decoded]) !== JSON.stringify([...map])) throw new Error(`round trip changed ${JSON.stringify([...map])} into ${JSON.stringify([...decoded])}`)
  }), { numRuns: NUM_RUNS })
  t.pass('round trip')
})

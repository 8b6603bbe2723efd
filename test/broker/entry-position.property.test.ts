import fc from 'fast-check'
import t from 'tap'
import { decodeEntry, entryAtOrBefore, entryBody } from '../../lib/broker/redis-layout.js'

/**
 * RedisBroker drops the pub/sub copy of an event it has handed on already by reading the
 * copy's first bytes (entryAtOrBefore), never decoding it. A wrong "yes" would lose an event
 * of another instance, so: for any bytes at all, a yes is given only where the decoder reads
 * the same epoch and an offset no later; and for every entry the broker writes, the answer is
 * exactly the decoder's.
 */
const NUM_RUNS = 2000

/** What the decoder makes of the entry's place: its epoch and offset, or undefined if it cannot. */
function placeOf (entry: string): { epoch: string, offset: number } | undefined {
  try {
    const event = decodeEntry('c', entry)
    return { epoch: event.epoch, offset: event.offset }
  } catch {
    return undefined
  }
}

/** Epochs as Redis makes them (a base and a bucket, base 36). */
const epoch = fc.stringMatching(/^[0-9a-z]{1,24}$/)
const offset = fc.oneof(fc.nat({ max: 1000 }), fc.maxSafeNat())
/** Text with the characters that matter here often: commas, digits, signs, spaces, multi-byte ones. */
const tricky = fc.string({ unit: fc.constantFrom(',', '0', '1', '9', '-', '+', ' ', '.', 'e', 'a', 'é', '\u{1F600}', '\u0000'), maxLength: 30 })
const anyText = fc.oneof(tricky, fc.string({ unit: 'binary', maxLength: 40 }))

t.test('a copy is taken for an event handed on only where the decoder reads that epoch and an offset no later', async (t) => {
  let yes = 0
  // Entries made to start like the last place (its epoch, a comma, digits) often enough to
  // say yes, with anything after; and any text at all.
  const nearPlace = fc.tuple(fc.nat({ max: 2000 }), tricky, fc.constantFrom(',', '', ',,', ' ,'))
    .map(([n, rest, sep]) => (lastEpoch: string) => `${lastEpoch},${n}${sep}${rest}`)
  const anyEntry = anyText.map((text) => () => text)
  fc.assert(fc.property(fc.oneof(nearPlace, anyEntry), fc.oneof(epoch, anyText), offset, (makeEntry, lastEpoch, lastOffset) => {
    const entry = makeEntry(lastEpoch)
    if (!entryAtOrBefore(Buffer.from(entry), lastEpoch, lastOffset)) return
    yes++
    // The decoder may still refuse the body; what matters is the place it would read.
    const a = entry.indexOf(',')
    const b = entry.indexOf(',', a + 1)
    if (!(a > 0 && b > a)) throw new Error(`yes for ${JSON.stringify(entry)} without an epoch and offset`)
    if (entry.slice(0, a) !== lastEpoch) throw new Error(`yes for ${JSON.stringify(entry)}: epoch ${entry.slice(0, a)} is not ${lastEpoch}`)
    const read = Number(entry.slice(a + 1, b))
    if (!Number.isSafeInteger(read) || read > lastOffset) throw new Error(`yes for ${JSON.stringify(entry)}: offset ${read} after ${lastOffset}`)
  }), { numRuns: NUM_RUNS })
  t.ok(yes > 0, `the property saw the check say yes (${yes} times), not only no`)
})

t.test('for every entry the broker writes, the check answers what decoding it would', async (t) => {
  const entry = fc.record({
    epoch,
    offset,
    ms: fc.nat({ max: 8.64e15 }),
    type: anyText,
    payload: fc.dictionary(anyText, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 })
  })
  fc.assert(fc.property(entry, fc.oneof(epoch, fc.constant('')), offset, fc.boolean(), (e, otherEpoch, lastOffset, sameEpoch) => {
    const text = `${e.epoch},${e.offset},${e.ms},${entryBody(e.type, JSON.stringify(e.payload))}`
    const lastEpoch = sameEpoch ? e.epoch : otherEpoch
    const place = placeOf(text)
    if (place === undefined) throw new Error(`the broker's own entry does not decode: ${text}`)
    const expected = place.epoch === lastEpoch && place.offset <= lastOffset
    if (entryAtOrBefore(Buffer.from(text), lastEpoch, lastOffset) !== expected) {
      throw new Error(`${JSON.stringify(text)} against ${lastEpoch} ${lastOffset}: expected ${String(expected)}`)
    }
  }), { numRuns: NUM_RUNS })
})

t.test('examples: the same place and earlier ones are copies, later ones, other epochs and other shapes are not', async (t) => {
  const at = (text: string): boolean => entryAtOrBefore(Buffer.from(text), 'e1', 17)
  t.equal(at('e1,17,1700000000000,{}'), true, 'the last event handed on')
  t.equal(at('e1,3,1700000000000,{}'), true, 'an earlier one')
  t.equal(at('e1,18,1700000000000,{}'), false, 'the next one')
  t.equal(at('e2,3,1700000000000,{}'), false, 'another epoch')
  t.equal(at('e11,3,1700000000000,{}'), false, 'an epoch the last one is a prefix of')
  t.equal(at('e1,,1700000000000,{}'), false, 'no offset')
  t.equal(at('e1,-1,1700000000000,{}'), false, 'a sign')
  t.equal(at('e1,17'), false, 'nothing after the offset')
  t.equal(at('~p{"nodeId":"n"}'), false, 'a presence message')
  t.equal(entryAtOrBefore(Buffer.from('e1,9007199254740991,0,{}'), 'e1', Number.MAX_SAFE_INTEGER), true, 'the largest safe offset')
  t.equal(entryAtOrBefore(Buffer.from('e1,9007199254740993,0,{}'), 'e1', Number.MAX_SAFE_INTEGER), false, 'past it')
  t.equal(entryAtOrBefore(Buffer.from('e1,00000000000000001,0,{}'), 'e1', 5), false, 'more digits than a safe integer has')
  t.equal(entryAtOrBefore(Buffer.from(',1,0,{}'), '', 5), false, 'an empty epoch')
})

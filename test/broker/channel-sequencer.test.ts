import t from 'tap'
import type { HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { ChannelSequencer } from '../../lib/broker/channel-sequencer.js'
import type { PublishedEvent, StreamPosition } from '../../lib/core/event.js'

/**
 * When the sequencer says a channel's delivery is settled (`settledAt`), the Redis broker
 * answers subscribers' reads from what delivery brought (RedisBroker.readLocally). It must
 * not say so while the store may hold events delivery has not brought: behind a position
 * the store reported, or after a fill that failed. The store here is the channel's events
 * in an array, read as the Redis broker reads history.
 */
const CHANNEL = 'room:seq'
const event = (offset: number, epoch = 'e1'): PublishedEvent => ({ channel: CHANNEL, type: 't', payload: { offset }, offset, epoch, ts: new Date(0).toISOString() })

function sequencer (stored: PublishedEvent[], fillRetryMs: number[] = []) {
  const delivered: number[] = []
  const resets: number[] = []
  /** `trimmed`: history no longer holds the offsets up to this one. */
  const state = { failReads: false, reads: 0, trimmed: 0 }
  const read = async (_channel: string, since: SincePosition): Promise<HistoryResult> => {
    state.reads++
    if (state.failReads) throw new Error('redis did not answer')
    const last = stored[stored.length - 1]
    const position: StreamPosition = { epoch: last?.epoch ?? 'e1', offset: last?.offset ?? 0 }
    if (since.offset < state.trimmed) return { events: [], position, recovered: false }
    return { events: stored.filter((e) => e.offset > since.offset), position, recovered: true }
  }
  const seq = new ChannelSequencer(read, (e) => delivered.push(e.offset), (_c, p) => resets.push(p.offset), undefined, fillRetryMs)
  return { seq, delivered, state, resets }
}

const settle = async () => { for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve)) }

t.test('settled where delivery stands; not while the store reported more', async (t) => {
  const store = [1, 2, 3].map((n) => event(n))
  const { seq, delivered } = sequencer(store)
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  for (const e of store) seq.push(e)
  t.same(seq.settledAt(CHANNEL), { epoch: 'e1', offset: 3 })
  seq.stored(CHANNEL, { epoch: 'e1', offset: 5 }) // a read saw 5: 4 and 5 are on their way
  t.equal(seq.settledAt(CHANNEL), undefined, 'behind the store')
  seq.push(event(4))
  t.equal(seq.settledAt(CHANNEL), undefined)
  seq.push(event(5))
  t.same(seq.settledAt(CHANNEL), { epoch: 'e1', offset: 5 }, 'settled once delivery reached it')
  seq.stored(CHANNEL, { epoch: 'e2', offset: 0 }) // the store started a new epoch
  t.equal(seq.settledAt(CHANNEL), undefined, 'not while delivery is in another epoch')
  t.same(delivered, [1, 2, 3, 4, 5])
})

t.test('a fill that failed leaves the channel unsettled until one succeeds', async (t) => {
  const store = [1, 2].map((n) => event(n))
  const { seq, delivered, state } = sequencer(store)
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  seq.push(event(1))
  store.push(event(3), event(4)) // published while the subscriber connection was away
  state.failReads = true
  seq.catchUp(CHANNEL) // after a reconnect
  await settle()
  t.equal(state.reads, 1)
  t.equal(seq.settledAt(CHANNEL), undefined, 'what the store holds beyond 1 is unknown')
  state.failReads = false
  seq.catchUp(CHANNEL)
  await settle()
  t.same(delivered, [1, 2, 3, 4])
  t.same(seq.settledAt(CHANNEL), { epoch: 'e1', offset: 4 }, 'settled again after a fill that worked')
})

t.test('a subscription that begins behind the store (an event seen before its position was read) catches up', async (t) => {
  const store = [1, 2, 3, 4].map((n) => event(n))
  const { seq, delivered, state } = sequencer(store)
  seq.push(event(2)) // a pub/sub message that came before the subscription's read
  seq.start(CHANNEL, { epoch: 'e1', offset: 4 }) // the read: 3 and 4 were published before, pub/sub will not bring them
  t.equal(seq.settledAt(CHANNEL), undefined)
  await settle()
  t.equal(state.reads, 1, 'read from history at once')
  t.same(delivered, [2, 3, 4])
  t.same(seq.settledAt(CHANNEL), { epoch: 'e1', offset: 4 })
})

t.test('a fill whose read fails is tried again, live events held meanwhile: history still holding the gap fills it, with no reset', async (t) => {
  const store = [1].map((n) => event(n))
  const { seq, delivered, state, resets } = sequencer(store, [20, 20])
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  seq.push(event(1))
  store.push(event(2), event(3), event(4)) // 2 and 3 lost by pub/sub in a blip
  state.failReads = true
  seq.push(event(4)) // a gap: filled from history, which cannot be read just now
  await settle()
  t.same(delivered, [1], 'held while the read fails')
  t.equal(seq.settledAt(CHANNEL), undefined)
  state.failReads = false
  while (delivered.length < 4) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(delivered, [1, 2, 3, 4], 'the gap filled once history could be read')
  t.same(resets, [], 'nothing announced as lost')
  t.equal(state.reads, 2)
})

t.test('a fill whose reads keep failing gives up after its retries: the gap is announced by a reset, never passed over silently', async (t) => {
  const store = [1].map((n) => event(n))
  const { seq, delivered, state, resets } = sequencer(store, [10, 10])
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  seq.push(event(1))
  state.failReads = true
  seq.push(event(4))
  while (delivered.length < 2) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(state.reads, 3, 'the first read and two more')
  t.same(resets, [3], 'a reset to just before the held event')
  t.same(delivered, [1, 4])
})

t.test('a catch-up that history no longer covers, on a quiet channel: the gap is announced at once, at the store\'s position', async (t) => {
  // Audit: subscribers stayed on the last event before the gap, with no reset, until the
  // channel's next publish; a subscribe waiting for delivery to reach the store hung 5 s.
  const store = [1, 2].map((n) => event(n))
  const { seq, delivered, state, resets } = sequencer(store)
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  seq.push(event(1))
  seq.push(event(2))
  for (let n = 3; n <= 250; n++) store.push(event(n)) // published while the subscriber connection was away
  state.trimmed = 150 // more than the history holds
  let reachedAt = 0
  const waiting = seq.reached(CHANNEL, { epoch: 'e1', offset: 250 }, 0).then(() => { reachedAt = Date.now() })
  const started = Date.now()
  await waiting
  t.same(resets, [250], 'a reset to where the store stands')
  t.same(delivered, [1, 2], 'nothing passed off as continuous')
  t.same(seq.settledAt(CHANNEL), { epoch: 'e1', offset: 250 })
  t.ok(reachedAt - started < 1000, `the read waiting on delivery goes on at once (${reachedAt - started} ms)`)
  store.push(event(251))
  seq.push(event(251))
  t.same(delivered, [1, 2, 251], 'the next event follows the reset')
  t.same(resets, [250], 'with no second reset')
})

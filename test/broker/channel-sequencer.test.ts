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

/**
 * A store with epochs, read as the Redis broker reads it: a read from another epoch than the
 * store's is not recovered (and says where the store stands); from the store's, every event after it.
 */
function epochStore () {
  const state = { epoch: 'e1', events: [] as PublishedEvent[], reads: 0, readsInFlight: [] as Array<() => void>, holdReads: false }
  const publish = (epoch: string, offset: number): PublishedEvent => {
    if (epoch !== state.epoch) { state.epoch = epoch; state.events = [] }
    const e = event(offset, epoch)
    state.events.push(e)
    return e
  }
  const read = async (_channel: string, since: SincePosition): Promise<HistoryResult> => {
    state.reads++
    // What the store holds when the read reaches it, not when it was asked.
    if (state.holdReads) await new Promise<void>((resolve) => state.readsInFlight.push(resolve))
    const position: StreamPosition = { epoch: state.epoch, offset: state.events.at(-1)?.offset ?? 0 }
    if (since.epoch !== state.epoch) return { events: [], position, recovered: false }
    return { events: state.events.filter((e) => e.offset > since.offset), position, recovered: true }
  }
  const seen: string[] = []
  const warnings: string[] = []
  const seq = new ChannelSequencer(read, (e) => seen.push(`${e.epoch}:${e.offset}`), (_c, p) => seen.push(`reset ${p.epoch}:${p.offset}`),
    { warn: (_obj, msg) => warnings.push(msg) }, [])
  return { seq, state, publish, seen, warnings }
}

t.test('a live event in an epoch the store is no longer in (a Redis master woken after its failover) is dropped, not taken as a restart', async (t) => {
  // Audit (SSE on a cluster, a master frozen 30 s): its queued publish went out on pub/sub in
  // its dead epoch after the promoted replica's first event; subscribers were reset back to the
  // dead epoch, then forward to the new one, replaying it: duplicates on 1803 of 3000 streams.
  const { seq, publish, seen, warnings, state } = epochStore()
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  for (let n = 1; n <= 3; n++) seq.push(publish('e1', n))
  seq.push(publish('e2', 1)) // the promoted replica: a new run, a new epoch
  await settle()
  t.same(seen, ['e1:1', 'e1:2', 'e1:3', 'reset e2:0', 'e2:1'], 'the new epoch, announced by a reset, once the store confirms it')
  const readsBefore = state.reads
  seq.push(event(4, 'e1')) // the old master wakes and runs the publish queued on its socket
  await settle()
  t.equal(state.reads, readsBefore + 1, 'the store was asked which epoch it is in')
  seq.push(publish('e2', 2))
  await settle()
  t.same(seen, ['e1:1', 'e1:2', 'e1:3', 'reset e2:0', 'e2:1', 'e2:2'], 'no reset back to e1, no replay of e2')
  t.match(warnings, [/an epoch the store is no longer in/])
  t.same(seq.settledAt(CHANNEL), { epoch: 'e2', offset: 2 })
})

t.test('an event in another epoch that came while the store was being read is read again before it is believed', async (t) => {
  const { seq, publish, seen, state } = epochStore()
  seq.start(CHANNEL, { epoch: 'e1', offset: 0 })
  seq.push(publish('e1', 1))
  state.holdReads = true
  publish('e1', 2) // lost by pub/sub
  seq.push(publish('e1', 3)) // a gap
  await settle()
  t.equal(state.readsInFlight.length, 1, 'reading the gap')
  // While that read is on its way, the store restarts (a failover) and its first event arrives.
  const restarted = publish('e2', 1)
  seq.push(restarted)
  state.holdReads = false
  state.readsInFlight.shift()?.()
  await settle()
  t.same(seen, ['e1:1', 'reset e2:0', 'e2:1'], 'the new epoch believed once a read saw it; e1\'s lost tail announced by the reset')
  t.same(seq.settledAt(CHANNEL), { epoch: 'e2', offset: 1 })

  // A stale event that came during a read the store then contradicts is dropped on the read after it.
  state.holdReads = true
  publish('e2', 2) // lost by pub/sub
  seq.push(publish('e2', 3)) // a gap again
  await settle()
  seq.push(event(9, 'e1')) // a dead node's, while the gap is read
  state.holdReads = false
  state.readsInFlight.shift()?.()
  await settle()
  state.readsInFlight.shift()?.()
  await settle()
  t.same(seen.slice(3), ['e2:2', 'e2:3'], 'the gap filled; the dead epoch\'s event never delivered')
})

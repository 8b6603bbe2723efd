import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { type Broker, type BrokerOptions, IdempotencyConflictError, type SincePosition, SourceMovedError } from '../../lib/broker/broker.js'
import { type Connection, HubMember } from '../../lib/hub/connection.js'
import type { EncodedEvent, EventDraft, MovedMarks, PublishedEvent, StreamPosition } from '../../lib/core/event.js'
import type { EncodedPresence, PresenceCounts } from '../../lib/core/presence.js'
import { Hub, type SubscribeOutcome } from '../../lib/hub/hub.js'
import { ANONYMOUS } from '../../lib/auth/identity.js'
import { HistoryPolicy } from '../../lib/broker/history-policy.js'

/**
 * ONE suite for every broker backend (mqemitter's abstractTest): the memory and Redis
 * brokers must behave the same through the Broker interface of lib/broker/broker.ts.
 * The factory may be async (a networked broker waits to be connected).
 */
export type BrokerFactory = (options: BrokerOptions) => Broker | Promise<Broker>

const EPOCH = /^[A-Za-z0-9_-]+$/
const WAIT_MS = 5000

/** Records what a broker delivers and lets a test wait for it (with a timeout, never a hang). */
export class DeliveryRecorder {
  readonly events: PublishedEvent[] = []
  private wake: Array<() => void> = []

  readonly deliver = (event: PublishedEvent): void => {
    this.events.push(event)
    const wake = this.wake
    this.wake = []
    for (const w of wake) w()
  }

  of (channel: string): PublishedEvent[] {
    return this.events.filter((e) => e.channel === channel)
  }

  async until (what: string, done: () => boolean, timeoutMs = WAIT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!done()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no delivery within ${timeoutMs} ms: ${what} (got ${this.events.length} events)`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100))
        this.wake.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }
}

/** A transport-less connection for hub-level tests: it records what it is sent. */
export class RecordingConnection extends HubMember implements Connection {
  readonly id = randomUUID()
  readonly transport = 'ws' as const
  identity = ANONYMOUS
  readonly received: PublishedEvent[] = []
  /** What `received` came in: the encodings, whose frames are shared by the connections sent the same one. */
  readonly encodings: EncodedEvent[] = []
  readonly resets: Array<{ channel: string, position: StreamPosition }> = []
  sendEvent (event: EncodedEvent): void {
    this.received.push(event.event)
    this.encodings.push(event)
  }

  sendReplayed (events: readonly EncodedEvent[]): void {
    for (const event of events) this.sendEvent(event)
  }

  /** What replayMustWait answers (a test sets it to see a subscribe refused for room). */
  mustWait = false
  replayMustWait (): boolean { return this.mustWait }

  sendReset (channel: string, position: StreamPosition): void { this.resets.push({ channel, position }) }
  readonly presence: Array<{ channel: string, counts: PresenceCounts }> = []
  sendPresence ({ channel, counts }: EncodedPresence): void { this.presence.push({ channel, counts }) }
  close (): void {}
}

export const suiteChannel = (name: string): string => `room:suite-${name}-${randomUUID().slice(0, 8)}`
const draft = (channel: string, n: number) => ({ channel, type: 'test:event', payload: { n } })
const offsets = (events: readonly PublishedEvent[]) => events.map((e) => e.offset)
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export function brokerSuite (t: Test, factory: BrokerFactory): void {
  async function make (t: Test, options: Partial<BrokerOptions> = {}): Promise<{ broker: Broker, recorder: DeliveryRecorder }> {
    const recorder = new DeliveryRecorder()
    const broker = await factory({ deliver: recorder.deliver, historySize: 100, historyTtlSeconds: 300, ...options })
    t.teardown(() => broker.close())
    return { broker, recorder }
  }

  t.test('offsets start at 1 and grow by one per channel; channels are independent', async (t) => {
    const { broker } = await make(t)
    const [a, b] = [suiteChannel('a'), suiteChannel('b')]
    const unknown = await broker.position(suiteChannel('unknown'))
    t.equal(unknown.offset, 0, 'an unknown channel is at 0')
    t.match(unknown.epoch, EPOCH)
    const a1 = await broker.publish(draft(a, 1))
    const a2 = await broker.publish(draft(a, 2))
    const b1 = await broker.publish(draft(b, 1))
    const a3 = await broker.publish(draft(a, 3))
    t.same([a1.offset, a2.offset, a3.offset, b1.offset], [1, 2, 3, 1])
    t.equal(a2.epoch, a1.epoch, 'one epoch while the stream lives')
    t.same(await broker.position(a), { offset: 3, epoch: a1.epoch })
    t.same(await broker.position(b), { offset: 1, epoch: b1.epoch })
  })

  t.test('publish resolves with the PublishedEvent, payload intact', async (t) => {
    const { broker } = await make(t)
    const channel = suiteChannel('published')
    const payload = { text: 'héllo ✓ 😀 "quoted", comma;semi', nested: { list: [1, 2.5, null, true], empty: {}, none: [] }, big: 2 ** 53 - 1 }
    const before = Date.now()
    const event = await broker.publish({ channel, type: 'order:updated', payload })
    t.match(event, { channel, type: 'order:updated', offset: 1 })
    t.same(event.payload, payload)
    t.match(event.epoch, EPOCH, 'epoch is base64url: no , or ; for the SSE cursor')
    t.equal(new Date(event.ts).toISOString(), event.ts, 'ts is ISO-8601')
    t.ok(Math.abs(Date.parse(event.ts) - before) < 5 * 60_000, 'ts is about now')
    const { events } = await broker.history(channel, { offset: 0, epoch: event.epoch })
    t.same(events, [event], 'history holds the same event, payload intact')
  })

  t.test('deliver: subscribed channels only, in offset order, once each, not after unsubscribe', async (t) => {
    const { broker, recorder } = await make(t)
    const [on, off, barrier] = [suiteChannel('on'), suiteChannel('off'), suiteChannel('barrier')]
    await broker.subscribe(on)
    for (let i = 1; i <= 5; i++) {
      await broker.publish(draft(on, i))
      await broker.publish(draft(off, i))
    }
    await recorder.until('5 events of the subscribed channel', () => recorder.of(on).length >= 5)
    await broker.unsubscribe(on)
    await broker.publish(draft(on, 6))
    // Events of one publisher reach a subscriber in publish order, so once the barrier's
    // event is in, anything still due from before it would have been too.
    await broker.subscribe(barrier)
    await broker.publish(draft(barrier, 1))
    await recorder.until('the barrier event', () => recorder.of(barrier).length === 1)
    t.same(offsets(recorder.of(on)), [1, 2, 3, 4, 5], 'in order, once each, none after unsubscribe')
    t.same(recorder.of(on).map((e) => e.payload.n), [1, 2, 3, 4, 5])
    t.same(recorder.of(off), [], 'nothing of a channel never subscribed')
  })

  t.test('history(since): exactly the events after since, or recovered false', async (t) => {
    const { broker } = await make(t)
    const channel = suiteChannel('history')
    const published: PublishedEvent[] = []
    for (let i = 1; i <= 5; i++) published.push(await broker.publish(draft(channel, i)))
    const epoch = published[0].epoch
    const position = { offset: 5, epoch }

    t.same(await broker.history(channel, { offset: 2, epoch }), { events: published.slice(2), position, recovered: true })
    t.same(await broker.history(channel, { offset: 2 }), { events: published.slice(2), position, recovered: true },
      'an omitted epoch means the current one')
    t.same(await broker.history(channel, { offset: 0, epoch }), { events: published, position, recovered: true })
    t.same(await broker.history(channel, { offset: 5, epoch }), { events: [], position, recovered: true },
      'since == position: nothing missed')
    t.same(await broker.history(channel, { offset: 2, epoch: 'another-epoch' }), { events: [], position, recovered: false },
      'a different epoch is not comparable')
    t.same(await broker.history(channel, { offset: 6, epoch }), { events: [], position, recovered: false },
      'since beyond the position')
    t.same(await broker.history(channel), { events: [], position, recovered: true }, 'without since: the position only')
  })

  t.test('positions are {offset, epoch}, in that order, as the protocol writes them, held or not', async (t) => {
    // Clients see these objects' JSON text (a subscribe's `positions`, a reset's `position`).
    const { broker } = await make(t)
    const channel = suiteChannel('position-order')
    const text = (position: StreamPosition) => JSON.stringify(position)
    const expected = (offset: number, epoch: string) => `{"offset":${offset},"epoch":${JSON.stringify(epoch)}}`
    const empty = await broker.position(channel)
    t.equal(text(empty), expected(0, empty.epoch), 'a channel never published')
    const first = await broker.publish(draft(channel, 1))
    t.equal(text((await broker.history(channel, { offset: 0 })).position), expected(1, first.epoch), 'read, not held')
    t.equal(text((await broker.recent(channel, 1)).position), expected(1, first.epoch), 'recent, not held')
    await broker.subscribe(channel)
    await broker.publish(draft(channel, 2))
    const held = await broker.history(channel, { offset: 0 }, { fromDelivery: true })
    t.equal(text(held.position), expected(2, first.epoch), 'held, as delivery stands')
    t.equal(text(await broker.position(channel)), expected(2, first.epoch), 'position() of a held channel')
  })

  t.test('trimmed history: all or nothing, never a partial replay', async (t) => {
    const { broker } = await make(t, { historySize: 3 })
    const channel = suiteChannel('trimmed')
    const published: PublishedEvent[] = []
    for (let i = 1; i <= 5; i++) published.push(await broker.publish(draft(channel, i)))
    const epoch = published[0].epoch
    t.same(await broker.history(channel, { offset: 1, epoch }), { events: [], position: { offset: 5, epoch }, recovered: false },
      'event 2 was trimmed')
    t.same(offsets((await broker.history(channel, { offset: 2, epoch })).events), [3, 4, 5], 'the last 3 are held')
  })

  t.test('expired history (TTL after the last publish): recovered false', async (t) => {
    const { broker } = await make(t, { historyTtlSeconds: 1 })
    const channel = suiteChannel('ttl')
    const first = await broker.publish(draft(channel, 1))
    await broker.publish(draft(channel, 2))
    await sleep(1300)
    const result = await broker.history(channel, { offset: 1, epoch: first.epoch })
    t.equal(result.recovered, false)
    t.same(result.events, [])
  })

  t.test('recent(count): the last events held, oldest first, with the position', async (t) => {
    const { broker } = await make(t, { historySize: 5 })
    const channel = suiteChannel('recent')
    const empty = await broker.recent(channel, 3)
    t.same([empty.events, empty.position.offset, empty.recovered], [[], 0, true], 'an empty channel: nothing, offset 0')
    t.equal(empty.position.epoch, (await broker.position(channel)).epoch, 'the same computed epoch as position()')
    const published: PublishedEvent[] = []
    for (let i = 1; i <= 7; i++) published.push(await broker.publish(draft(channel, i)))
    const position = { offset: 7, epoch: published[0].epoch }
    t.same(await broker.recent(channel, 1), { events: published.slice(6), position, recovered: true }, 'the latest: the current state')
    t.same(offsets((await broker.recent(channel, 3)).events), [5, 6, 7])
    t.same(offsets((await broker.recent(channel, 50)).events), [3, 4, 5, 6, 7], 'fewer when the history holds fewer')
  })

  t.test('HISTORY_POLICY: each channel keeps what its longest matching prefix says', async (t) => {
    const policy = new HistoryPolicy({ size: 4, ttlSeconds: 300 }, [
      { prefix: 'room:suite-pol', size: 2, ttlSeconds: 300 },
      { prefix: 'room:suite-polbig', size: 10, ttlSeconds: 300 }
    ])
    const { broker } = await make(t, { historySize: 4, policy })
    const [small, big, other] = [suiteChannel('polsmall'), suiteChannel('polbig'), suiteChannel('other')]
    for (let i = 1; i <= 12; i++) for (const channel of [small, big, other]) await broker.publish(draft(channel, i))
    t.same(offsets((await broker.recent(small, 100)).events), [11, 12], 'room:suite-pol keeps 2')
    t.same(offsets((await broker.recent(big, 100)).events), range(3, 12), 'the longer prefix room:suite-polbig keeps 10')
    t.same(offsets((await broker.recent(other, 100)).events), [9, 10, 11, 12], 'no prefix: the default 4')
  })

  t.test('HISTORY_POLICY TTLs: a prefix\'s TTL runs from the channel\'s latest publish, as on every broker', async (t) => {
    const policy = new HistoryPolicy({ size: 10, ttlSeconds: 300 }, [{ prefix: 'room:suite-short', size: 10, ttlSeconds: 3 }])
    const { broker } = await make(t, { historySize: 10, historyTtlSeconds: 300, policy })
    const [busy, quiet, other] = [suiteChannel('short-busy'), suiteChannel('short-quiet'), suiteChannel('long')]
    const first = await Promise.all([busy, quiet, other].map(async (channel) => await broker.publish(draft(channel, 1))))
    await sleep(2000)
    await broker.publish(draft(busy, 2))
    await sleep(1200)
    // busy: its first event is older than the TTL, its latest publish is not: both are kept.
    const kept = await broker.history(busy, { offset: 0, epoch: first[0].epoch })
    t.same([offsets(kept.events), kept.recovered], [[1, 2], true], 'kept for the TTL after the channel\'s latest publish')
    const expired = await broker.history(quiet, { offset: 0, epoch: first[1].epoch })
    t.same([expired.events, expired.recovered], [[], false], 'a quiet channel of the prefix: expired after its 3 s')
    t.same(offsets((await broker.history(other, { offset: 0, epoch: first[2].epoch })).events), [1], 'another prefix: the default TTL')
  })

  t.test('dedupe keys: a draft seen before is not published again; its first place is answered', async (t) => {
    const { broker, recorder } = await make(t)
    const channel = suiteChannel('dedupe')
    await broker.subscribe(channel)
    const first = await broker.publish({ ...draft(channel, 1), dedupe: 'h:caller:key:0' })
    t.equal(first.replayed, undefined)
    const again = await broker.publish({ ...draft(channel, 1), dedupe: 'h:caller:key:0' })
    t.match(again, { offset: first.offset, epoch: first.epoch, replayed: true }, 'the first event\'s place, replayed')
    const batch = await broker.publishBatch([{ ...draft(channel, 2), dedupe: 'h:caller:key:0' }, { ...draft(channel, 3), dedupe: 'h:caller:key:1' }])
    t.same(batch.map((e) => [e.offset, e.replayed === true]), [[1, true], [2, false]], 'in a batch too')
    const other = await broker.publish({ ...draft(suiteChannel('dedupe-other'), 9), dedupe: 'h:caller:key:0' })
    t.equal(other.replayed, undefined, 'keys are per channel')
    await recorder.until('two deliveries', () => recorder.of(channel).length >= 2)
    t.same(offsets(recorder.of(channel)), [1, 2], 'delivered once each')
    t.same(offsets((await broker.history(channel, { offset: 0 })).events), [1, 2], 'kept once each')
  })

  t.test('origins: drafts at or below a source\'s high-water mark are skipped (a Kafka message read again)', async (t) => {
    const { broker, recorder } = await make(t)
    const channel = suiteChannel('origin')
    await broker.subscribe(channel)
    const at = (offset: number, index: number) => ({ ...draft(channel, offset * 10 + index), origin: { source: 'topic-a:0', offset, index } })
    const firstRead = await broker.publishBatch([at(5, 0), at(5, 1), at(6, 0)])
    t.same(firstRead.map((e) => e.replayed === true), [false, false, false])
    const readAgain = await broker.publishBatch([at(5, 0), at(5, 1), at(6, 0), at(7, 0)])
    t.same(readAgain.map((e) => e.replayed === true), [true, true, true, false], 'only the new message is published')
    t.equal((await broker.publish(at(6, 0))).replayed, true, 'single publishes check it too')
    const otherSource = await broker.publish({ ...draft(channel, 99), origin: { source: 'topic-a:1', offset: 5, index: 0 } })
    t.equal(otherSource.replayed, undefined, 'marks are per source')
    await recorder.until('five deliveries', () => recorder.of(channel).length >= 5)
    t.same(recorder.of(channel).map((e) => e.payload.n), [50, 51, 60, 70, 99])
  })

  t.test('origins: a mark at or past where its source\'s log ends now is set aside only as its reader confirms (a topic created again, not a reader paused past its session)', async (t) => {
    const { broker, recorder } = await make(t)
    const channel = suiteChannel('origin-log-end')
    await broker.subscribe(channel)
    const source = `topic-re-${channel}:0`
    const at = (n: number, offset: number, logEnd?: number, movedMarks?: MovedMarks) =>
      ({ ...draft(channel, n), origin: { source, offset, index: 0, logEnd, ...(movedMarks === undefined ? {} : { movedMarks }) } })
    const moved = async (drafts: EventDraft[]): Promise<MovedMarks> => {
      const err = await broker.publishBatch(drafts).then(() => undefined, (e: unknown) => e)
      t.type(err, SourceMovedError, 'refused: the mark is past where the drafts\' log ends')
      return (err as SourceMovedError).marks
    }
    // The first log: offsets 0–9, its end at 10.
    t.same((await broker.publishBatch([at(1, 8, 10), at(2, 9, 10)])).map((e) => e.replayed === true), [false, false])
    t.same((await broker.publishBatch([at(3, 9, 10), at(4, 9, 20)])).map((e) => e.replayed === true), [true, true],
      'read again from the same log (its end at or past the mark): nothing new, however far the log has grown')
    t.equal((await broker.publish(at(5, 9))).replayed, true, 'a draft without its log end is checked against the mark as before')
    // The topic deleted and created again: a new log, ending at 3, counts from 0. Or a
    // reader paused since it fetched offsets 0–2, while another published up to 9: only
    // the reader can tell, so nothing is published until it says which.
    const marks = await moved([at(6, 0, 3), at(7, 1, 3), at(8, 2, 3)])
    t.same([...marks.values()], ['9,0'], 'the mark as it was read')
    t.equal((await broker.position(channel)).offset, 2, 'nothing published')
    t.same([...(await moved([at(6, 0, 3, new Map([...marks].map(([k]) => [k, '8,0'])))])).values()], ['9,0'],
      'a confirmation of another reading sets nothing aside')
    const recreated = await broker.publishBatch([at(6, 0, 3, marks), at(7, 1, 3, marks), at(8, 2, 3, marks)])
    t.same(recreated.map((e) => e.replayed === true), [false, false, false], 'confirmed as a log that is gone: the new log\'s messages are published')
    t.same((await broker.publishBatch([at(9, 2, 3), at(10, 3, 4)])).map((e) => e.replayed === true), [true, false],
      'and its own mark holds from then on: a message of it read again is skipped, the next one published')
    t.same([...(await moved([at(11, 0, 3, marks)])).values()], ['3,0'], 'an old confirmation is no confirmation of the mark as it reads now')
    await recorder.until('six deliveries', () => recorder.of(channel).length >= 6)
    t.same(recorder.of(channel).map((e) => e.payload.n), [1, 2, 6, 7, 8, 10], 'each message once')
  })

  t.test('a claim is taken with its publish: a repeat publishes as usual, another fingerprint publishes nothing', async (t) => {
    const { broker } = await make(t)
    const [channel, other] = [suiteChannel('claim'), suiteChannel('claim-other')]
    const scope = `scope-${channel}`
    const keyed = (n: number) => [{ ...draft(channel, n), dedupe: `h:${scope}:0` }, { ...draft(other, n), dedupe: `h:${scope}:1` }]
    const first = await broker.publishBatch(keyed(1), { scope, fingerprint: 'fp-1' })
    t.same(offsets(first), [1, 1])
    const repeat = await broker.publishBatch(keyed(1), { scope, fingerprint: 'fp-1' })
    t.same([offsets(repeat), repeat.map((e) => e.replayed)], [[1, 1], [true, true]], 'a repeat: the first places, nothing new')
    await t.rejects(broker.publishBatch([draft(channel, 2), draft(other, 2)], { scope, fingerprint: 'fp-2' }), IdempotencyConflictError,
      'another request with the key')
    t.same([(await broker.position(channel)).offset, (await broker.position(other)).offset], [1, 1], 'it published nothing')
    const apart = await broker.publishBatch([draft(channel, 3)], { scope: `${scope}-b`, fingerprint: 'fp-2' })
    t.equal(apart[0].offset, 2, 'another scope is another claim')
  })

  t.test('200 concurrent publishes on one channel: distinct consecutive offsets, in issue order', async (t) => {
    const { broker } = await make(t, { historySize: 500 })
    const channel = suiteChannel('concurrent')
    const events = await Promise.all(range(0, 199).map((n) => broker.publish(draft(channel, n))))
    t.same(offsets(events).sort((x, y) => x - y), range(1, 200), 'distinct and consecutive')
    t.ok(events.every((e, i) => e.offset === i + 1), 'assigned in the order issued')
    t.equal(new Set(events.map((e) => e.epoch)).size, 1)
    const history = await broker.history(channel, { offset: 0 })
    t.same(history.events.map((e) => e.payload.n), range(0, 199), 'history in offset order')
  })

  t.test('publishBatch: the events of consecutive publishes, in draft order, in one call', async (t) => {
    const { broker, recorder } = await make(t)
    const [a, b] = [suiteChannel('batch-a'), suiteChannel('batch-b')]
    await broker.subscribe(a)
    await broker.subscribe(b)
    await broker.publish(draft(a, 0))
    const drafts = [draft(a, 1), draft(b, 1), draft(a, 2), { channel: b, type: 'other:type', payload: { text: 'héllo ✓', list: [1, null] } }, draft(a, 3)]
    const events = await broker.publishBatch(drafts)
    t.same(events.map((e) => [e.channel, e.offset]), [[a, 2], [b, 1], [a, 3], [b, 2], [a, 4]], 'each channel counts on in draft order')
    t.same(events.map(({ channel, type, payload }) => ({ channel, type, payload })), drafts, 'each event is its draft')
    t.equal(new Set(events.filter((e) => e.channel === a).map((e) => e.epoch)).size, 1, 'one epoch per channel')
    for (const e of events) t.equal(new Date(e.ts).toISOString(), e.ts, 'ts is ISO-8601')
    t.same(await broker.position(a), { offset: 4, epoch: events[0].epoch })
    t.same((await broker.history(b, { offset: 0 })).events, [events[1], events[3]], 'history holds them as publish would')
    await recorder.until('every batched event delivered', () => recorder.of(a).length === 4 && recorder.of(b).length === 2)
    t.same(offsets(recorder.of(a)), [1, 2, 3, 4], 'delivered in offset order, once each')
    t.same(offsets(recorder.of(b)), [1, 2])
    t.same(await broker.publishBatch([]), [], 'an empty batch publishes nothing')
  })

  t.test('publishBatch: more events of a channel than its history keeps, repeats inside one batch, a channel started in it', async (t) => {
    const { broker, recorder } = await make(t, { historySize: 3 })
    const [a, fresh] = [suiteChannel('batch-long'), suiteChannel('batch-fresh')]
    await broker.subscribe(a)
    await broker.subscribe(fresh)
    await broker.publish(draft(a, 0))
    const origin = (offset: number) => ({ source: 'topic-b:3', offset, index: 0 })
    const drafts = [
      ...range(1, 8).map((n) => draft(a, n)),
      { ...draft(fresh, 1), origin: origin(40) },
      { ...draft(fresh, 2), origin: origin(40) }, // the same message again: skipped
      { ...draft(fresh, 3), origin: origin(39) }, // below the mark moved by the first: skipped
      { ...draft(fresh, 4), origin: origin(41) },
      { ...draft(a, 9), dedupe: 'h:c:k' },
      { ...draft(a, 10), dedupe: 'h:c:k' } // the same key: the first one's place
    ]
    const events = await broker.publishBatch(drafts)
    t.same(events.map((e) => [e.channel === a ? 'a' : 'fresh', e.offset, e.replayed === true]), [
      ...range(2, 9).map((offset) => ['a', offset, false]),
      ['fresh', 1, false], ['fresh', 0, true], ['fresh', 0, true], ['fresh', 2, false],
      ['a', 10, false], ['a', 10, true]
    ], 'offsets per channel, repeats answered as repeats')
    const history = await broker.history(a, { offset: 7 })
    t.same(history.events.map((e) => e.payload.n), [7, 8, 9], 'the history keeps the last 3 of the run')
    t.same(await broker.position(a), { offset: 10, epoch: events[0].epoch })
    t.equal((await broker.history(a, { offset: 5 })).recovered, false, 'older ones are gone: not recoverable')
    await recorder.until('every new event delivered', () => recorder.of(a).length === 10 && recorder.of(fresh).length === 2)
    t.same(offsets(recorder.of(a)), range(1, 10), 'delivered once each, in order')
    t.same(recorder.of(fresh).map((e) => e.payload.n), [1, 4])
    t.equal((await broker.publish({ ...draft(fresh, 5), origin: origin(41) })).replayed, true, 'the mark the run left holds for later calls')
  })

  t.test('publishBatch and publish issued together keep call order on a channel', async (t) => {
    const { broker } = await make(t, { historySize: 500 })
    const channel = suiteChannel('batch-order')
    const calls = [
      broker.publish(draft(channel, 0)),
      broker.publishBatch(range(1, 100).map((n) => draft(channel, n))),
      broker.publish(draft(channel, 101)),
      broker.publishBatch([draft(channel, 102), draft(channel, 103)])
    ]
    const events = (await Promise.all(calls)).flat()
    t.same(offsets(events), range(1, 104), 'offsets in the order the calls were made')
    t.same((await broker.history(channel, { offset: 0 })).events.map((e) => e.payload.n), range(0, 103))
  })

  t.test('publishBatch rejects once the broker is closed, and takes nothing', async (t) => {
    const { broker } = await make(t)
    const channel = suiteChannel('batch-closed')
    await broker.close()
    await t.rejects(broker.publishBatch([draft(channel, 1), draft(channel, 2)]))
  })

  t.test('the hub seam: replay + live delivery while publishes go on, no loss, no duplicate', async (t) => {
    // The factory may be async, so the broker is made first and handed to the hub.
    const ref: { hub?: Hub } = {}
    const broker = await factory({ deliver: (e) => ref.hub?.deliver(e), historySize: 500, historyTtlSeconds: 300 })
    t.teardown(() => broker.close())
    const hub = ref.hub = new Hub(() => broker, { maxChannelsPerConnection: 8 })

    await seamScenario(t, hub, broker)
  })
}

/**
 * Connections join a channel of `hub` while `publisher` (the hub's own broker, or another
 * instance's) keeps publishing; some start at the live edge, some recover from a little
 * back. Each must get exactly the offsets after its start, once each, in order.
 */
export async function seamScenario (t: Test, hub: Hub, publisher: Broker): Promise<void> {
  const channel = suiteChannel('seam')
  const total = 120
  // Publishes go on one after another (with short pauses) while connections join.
  const publishing = (async () => {
    for (let n = 0; n < total; n++) {
      await publisher.publish(draft(channel, n))
      if (n % 4 === 3) await sleep(1)
    }
  })()
  const subscriptions: Array<Promise<{ connection: RecordingConnection, since?: SincePosition, rewind?: number, outcome: SubscribeOutcome }>> = []
  for (let round = 0; round < 9; round++) {
    await sleep(5)
    const connection = new RecordingConnection()
    hub.add(connection)
    // In turn: a live-edge subscription, a recovering one that starts a little back, one that rewinds.
    const since = round % 3 === 1 ? { offset: Math.max(0, (await publisher.position(channel)).offset - 7) } : undefined
    const rewind = round % 3 === 2 ? 5 : undefined
    subscriptions.push(hub.subscribe(connection, [channel], since === undefined ? {} : { [channel]: since }, rewind).then((outcome) => {
      outcome.replay()
      return { connection, since, rewind, outcome }
    }))
  }
  await publishing
  const subscribed = await Promise.all(subscriptions)
  for (const { connection, since, rewind, outcome } of subscribed) {
    const recovered = outcome.recovered[channel]
    const position = outcome.positions[channel].offset
    const start = since !== undefined && recovered ? since.offset : rewind !== undefined ? Math.max(0, position - rewind) : position
    t.same(outcome.startsAfter[channel], { offset: start, epoch: outcome.positions[channel].epoch }, 'startsAfter says where it starts')
    const deadline = Date.now() + WAIT_MS
    while (connection.received.length < total - start && Date.now() < deadline) await sleep(10)
    const from = since === undefined ? rewind === undefined ? 'the live edge' : `rewind ${rewind}` : `since ${since.offset}`
    t.same(offsets(connection.received), range(start + 1, total), `a connection from ${from} got ${start + 1}..${total} once each`)
    if (since !== undefined) t.equal(recovered, true, 'history covered the since position')
  }
}

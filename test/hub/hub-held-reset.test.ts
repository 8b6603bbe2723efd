import t, { type Test } from 'tap'
import type { Broker, DeliverFn, HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import type { EventDraft, PublishedEvent } from '../../lib/core/event.js'
import { Hub } from '../../lib/hub/hub.js'
import { RecordingConnection } from '../support/broker-suite.js'

/**
 * A `system:reset` that reaches a subscriber while its subscribe reads history is held
 * back with the live events, in order. When the read already went past it, it is stale.
 */

/** A memory broker whose history reads wait, once `gate` is armed, until the test lets them go. */
class GatedBroker implements Broker {
  readonly kind = 'memory'
  readonly inner: MemoryBroker
  private gated: { opened: Promise<void>, open: () => void, started: () => void } | null = null
  constructor (deliver: DeliverFn) {
    this.inner = new MemoryBroker({ deliver, historySize: 100, historyTtlSeconds: 300 })
  }

  /** What the next gated read answers instead of the memory broker (a stream that restarted meanwhile). */
  answer?: HistoryResult
  /** Makes the next read wait for `open`; resolves once that read has started. */
  async gate (): Promise<void> {
    await new Promise<void>((resolve) => {
      let open!: () => void
      const opened = new Promise<void>((resolve) => { open = resolve })
      this.gated = { opened, open, started: resolve }
    })
  }

  /** Lets the waiting read go on. */
  open (): void { this.opening?.() }
  private opening?: () => void
  publish = async (draft: EventDraft) => await this.inner.publish(draft)
  publishBatch = async (drafts: readonly EventDraft[]) => await this.inner.publishBatch(drafts)
  subscribe = async (channel: string) => { await this.inner.subscribe(channel) }
  unsubscribe = async (channel: string) => { await this.inner.unsubscribe(channel) }
  position = async (channel: string) => await this.inner.position(channel)
  history = async (channel: string, since?: SincePosition) => await this.read(async () => await this.inner.history(channel, since))
  recent = async (channel: string, count: number) => await this.read(async () => await this.inner.recent(channel, count))

  private async read (inner: () => Promise<HistoryResult>): Promise<HistoryResult> {
    const gated = this.gated
    if (gated === null) return await inner()
    this.gated = null
    this.opening = gated.open
    gated.started()
    await gated.opened
    return this.answer ?? await inner()
  }

  isReady = () => true
  get control () { return this.inner.control }
  close = async () => await this.inner.close()
}

async function setup (t: Test, channel: string, published: number) {
  let broker: GatedBroker | undefined
  const hub = new Hub((deliver) => (broker = new GatedBroker(deliver)), { maxChannelsPerConnection: 8 })
  t.teardown(() => hub.broker.close())
  const gated = broker as GatedBroker
  for (let n = 1; n <= published; n++) await gated.publish({ channel, type: 't', payload: { n } })
  const connection = new RecordingConnection()
  hub.add(connection)
  const { epoch } = await gated.position(channel)
  return { hub, broker: gated, connection, epoch }
}

const offsets = (connection: RecordingConnection) => connection.received.map((e) => e.offset)

t.test('a reset the read went past is not sent: the replay already covers what follows it', async (t) => {
  const channel = 'room:stale-reset'
  const { hub, broker, connection, epoch } = await setup(t, channel, 5)
  const reading = broker.gate()
  const subscribing = hub.subscribe(connection, [channel], { [channel]: { offset: 2, epoch } })
  await reading
  // Meanwhile the live path announces a gap up to 5, then delivers 6 and 7 (held back).
  hub.reset(channel, { offset: 5, epoch })
  await broker.publish({ channel, type: 't', payload: { n: 6 } })
  await broker.publish({ channel, type: 't', payload: { n: 7 } })
  broker.open()
  const outcome = await subscribing
  t.same(outcome.positions[channel], { offset: 7, epoch }, 'the read saw up to 7')
  outcome.replay()
  t.same(offsets(connection), [3, 4, 5, 6, 7], 'each event once, in order')
  t.same(connection.resets, [], 'no reset counting back behind the replay')
  await broker.publish({ channel, type: 't', payload: { n: 8 } })
  t.same(offsets(connection), [3, 4, 5, 6, 7, 8], 'live delivery goes on from there')
})

t.test('a fresh subscribe from the live edge is not sent a reset older than its position', async (t) => {
  const channel = 'room:stale-reset-live'
  const { hub, broker, connection, epoch } = await setup(t, channel, 3)
  const reading = broker.gate()
  const subscribing = hub.subscribe(connection, [channel])
  await reading
  hub.reset(channel, { offset: 2, epoch })
  await broker.publish({ channel, type: 't', payload: { n: 4 } })
  broker.open()
  const outcome = await subscribing
  outcome.replay()
  t.same(outcome.positions[channel], { offset: 4, epoch })
  t.same(offsets(connection), [], 'nothing from before its position')
  t.same(connection.resets, [])
})

t.test('a reset ahead of the read, or in another epoch, still goes out before what follows it', async (t) => {
  const channel = 'room:fresh-reset'
  const { hub, broker, connection, epoch } = await setup(t, channel, 3)
  const reading = broker.gate()
  const subscribing = hub.subscribe(connection, [channel], { [channel]: { offset: 1, epoch } })
  await reading
  await broker.publish({ channel, type: 't', payload: { n: 4 } })
  hub.reset(channel, { offset: 9, epoch })
  hub.reset(channel, { offset: 0, epoch: 'another-epoch' })
  broker.open()
  const outcome = await subscribing
  outcome.replay()
  t.same(offsets(connection), [2, 3, 4], 'the replay')
  t.same(connection.resets.map((r) => r.position), [{ offset: 9, epoch }, { offset: 0, epoch: 'another-epoch' }],
    'both resets, in order')
})

/** An event of another life of the channel's stream (the memory broker has only one). */
const eventOf = (channel: string, epoch: string, offset: number): PublishedEvent =>
  ({ channel, epoch, offset, type: 't', payload: { n: offset }, ts: new Date().toISOString() })

t.test('a held channel resumed across a restart that history cannot bridge still gets the restart\'s reset first', async (t) => {
  const channel = 'room:restarted'
  const { hub, broker, connection, epoch } = await setup(t, channel, 0)
  const joined = await hub.subscribe(connection, [channel])
  joined.replay()
  for (let n = 1; n <= 3; n++) await broker.publish({ channel, type: 't', payload: { n } })
  t.same(offsets(connection), [1, 2, 3])

  // Resumed from 1; meanwhile the stream restarts in epoch E2, whose first event is held back.
  const reading = broker.gate()
  const resuming = hub.subscribe(connection, [channel], { [channel]: { offset: 1, epoch } })
  await reading
  hub.reset(channel, { offset: 0, epoch: 'E2' })
  hub.deliver(eventOf(channel, 'E2', 1))
  broker.answer = { events: [], position: { offset: 1, epoch: 'E2' }, recovered: false }
  broker.open()
  const outcome = await resuming
  t.same(outcome.recovered, { [channel]: false })
  outcome.replay()
  t.same(connection.resets.map((r) => r.position), [{ offset: 0, epoch: 'E2' }], 'the reset to the new epoch')
  t.same(connection.received.map((e) => `${e.epoch === epoch ? 'E1' : e.epoch}/${e.offset}`), ['E1/1', 'E1/2', 'E1/3', 'E2/1'],
    'then the new epoch\'s event: never backwards without a reset')
})

t.test('resets the read overtook are dropped with what came before them, however many', async (t) => {
  const channel = 'room:restarted-twice'
  const { hub, broker, connection } = await setup(t, channel, 0)
  const reading = broker.gate()
  const subscribing = hub.subscribe(connection, [channel], {}, 5)
  await reading
  // Two restarts during a rewind's read, which answered from the second one's life.
  hub.reset(channel, { offset: 0, epoch: 'E2' })
  hub.deliver(eventOf(channel, 'E2', 1))
  hub.reset(channel, { offset: 0, epoch: 'E3' })
  hub.deliver(eventOf(channel, 'E3', 1))
  broker.answer = { events: [eventOf(channel, 'E3', 1)], position: { offset: 1, epoch: 'E3' }, recovered: true }
  broker.open()
  const outcome = await subscribing
  outcome.replay()
  t.same(connection.received.map((e) => `${e.epoch}/${e.offset}`), ['E3/1'], 'the rewind\'s event, once')
  t.same(connection.resets, [], 'and no reset back into an epoch it has left')
  hub.deliver(eventOf(channel, 'E3', 2))
  t.same(connection.received.map((e) => `${e.epoch}/${e.offset}`), ['E3/1', 'E3/2'], 'live delivery goes on')
})

import t, { type Test } from 'tap'
import type { Broker, DeliverFn, HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import type { EventDraft } from '../../lib/core/event.js'
import { Hub } from '../../lib/hub/hub.js'
import { RecordingConnection } from '../support/broker-suite.js'

/**
 * A `system:reset` that reaches a subscriber while its subscribe reads history is held
 * back with the live events, in order. When the read already went past it, it is stale.
 */

/** A memory broker whose history reads wait until the test lets them go. */
class GatedBroker implements Broker {
  readonly kind = 'memory'
  readonly inner: MemoryBroker
  private opened: (() => void) | null = null
  readonly reading: Promise<void>
  private readStarted!: () => void
  constructor (deliver: DeliverFn) {
    this.inner = new MemoryBroker({ deliver, historySize: 100, historyTtlSeconds: 300 })
    this.reading = new Promise((resolve) => { this.readStarted = resolve })
  }

  /** Lets the waiting read go on. */
  open (): void { this.opened?.() }
  publish = async (draft: EventDraft) => await this.inner.publish(draft)
  publishBatch = async (drafts: readonly EventDraft[]) => await this.inner.publishBatch(drafts)
  subscribe = async (channel: string) => { await this.inner.subscribe(channel) }
  unsubscribe = async (channel: string) => { await this.inner.unsubscribe(channel) }
  position = async (channel: string) => await this.inner.position(channel)
  async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    const gate = new Promise<void>((resolve) => { this.opened = resolve })
    this.readStarted()
    await gate
    return await this.inner.history(channel, since)
  }

  recent = async (channel: string, count: number) => await this.inner.recent(channel, count)
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
  const subscribing = hub.subscribe(connection, [channel], { [channel]: { offset: 2, epoch } })
  await broker.reading
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
  const subscribing = hub.subscribe(connection, [channel])
  await broker.reading
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
  const subscribing = hub.subscribe(connection, [channel], { [channel]: { offset: 1, epoch } })
  await broker.reading
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

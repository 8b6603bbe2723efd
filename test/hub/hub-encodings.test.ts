import t, { type Test } from 'tap'
import type { Broker, DeliverFn, HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import type { EncodedEvent, EventDraft } from '../../lib/core/event.js'
import { Hub } from '../../lib/hub/hub.js'
import { RecordingConnection } from '../support/broker-suite.js'

/**
 * Encodings are shared: a live event is encoded once for every subscriber (also for one
 * that held it back during its replay), and the events replayed in one turn once for every
 * connection that replays them (lib/core/turn-memo.ts), nothing kept after the turn.
 */
class EncodingRecorder extends RecordingConnection {
  readonly encoded: EncodedEvent[] = []
  override sendEvent (event: EncodedEvent): void {
    super.sendEvent(event)
    this.encoded.push(event)
  }
}

/** A memory broker whose history reads answer a turn later, so live events can arrive meanwhile. */
class SlowReadBroker implements Broker {
  readonly kind = 'memory'
  readonly inner: MemoryBroker
  constructor (deliver: DeliverFn) { this.inner = new MemoryBroker({ deliver, historySize: 100, historyTtlSeconds: 300 }) }
  publish = async (draft: EventDraft) => await this.inner.publish(draft)
  publishBatch = async (drafts: readonly EventDraft[]) => await this.inner.publishBatch(drafts)
  subscribe = async (channel: string) => await this.inner.subscribe(channel)
  unsubscribe = async (channel: string) => await this.inner.unsubscribe(channel)
  position = async (channel: string) => await this.inner.position(channel)
  async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    const result = await this.inner.history(channel, since)
    await new Promise((resolve) => setImmediate(resolve))
    return result
  }

  recent = async (channel: string, count: number) => await this.inner.recent(channel, count)
  isReady = () => true
  get control () { return this.inner.control }
  close = async () => await this.inner.close()
}

function setup (t: Test) {
  const hub = new Hub((deliver) => new SlowReadBroker(deliver), { maxChannelsPerConnection: 8 })
  t.teardown(() => hub.broker.close())
  const connect = () => {
    const connection = new EncodingRecorder()
    hub.add(connection)
    return connection
  }
  return { hub, connect }
}

const channel = 'room:encodings'
const offsets = (c: EncodingRecorder) => c.encoded.map((e) => e.event.offset)

t.test('the resumes of one turn share each replayed event\'s encoding; a later turn encodes afresh', async (t) => {
  const { hub, connect } = setup(t)
  for (let n = 1; n <= 5; n++) await hub.broker.publish({ channel, type: 'test:event', payload: { n } })
  const { epoch } = await hub.broker.position(channel)
  const [a, b, later] = [connect(), connect(), connect()]
  const [fromOne, fromThree] = await Promise.all([
    hub.subscribe(a, [channel], { [channel]: { offset: 1, epoch } }),
    hub.subscribe(b, [channel], { [channel]: { offset: 3, epoch } })
  ])
  fromOne.replay()
  fromThree.replay()
  t.same(offsets(a), [2, 3, 4, 5])
  t.same(offsets(b), [4, 5])
  t.equal(b.encoded[0], a.encoded[2], 'offset 4: one encoding for both')
  t.equal(b.encoded[1], a.encoded[3], 'offset 5: one encoding for both')
  t.equal(a.encoded[3].ws, JSON.stringify({ type: 'test:event', channel, offset: 5, payload: { n: 5 }, ts: a.encoded[3].event.ts }))

  await new Promise((resolve) => setImmediate(resolve))
  const outcome = await hub.subscribe(later, [channel], { [channel]: { offset: 3, epoch } })
  outcome.replay()
  t.same(offsets(later), [4, 5])
  t.not(later.encoded[1], a.encoded[3], 'nothing kept from an earlier turn')
  t.equal(later.encoded[1].ws, a.encoded[3].ws, 'the same bytes')
})

t.test('a live event held back during a replay is sent as fan-out encoded it for everyone', async (t) => {
  const { hub, connect } = setup(t)
  await hub.broker.publish({ channel, type: 'test:event', payload: { n: 1 } })
  const { epoch } = await hub.broker.position(channel)
  const [live, resuming] = [connect(), connect()]
  ;(await hub.subscribe(live, [channel])).replay()
  const subscribing = hub.subscribe(resuming, [channel], { [channel]: { offset: 0, epoch } })
  await new Promise((resolve) => setImmediate(resolve)) // the read is under way
  await hub.broker.publish({ channel, type: 'test:event', payload: { n: 2 } })
  t.same(offsets(live), [2], 'delivered live')
  t.same(offsets(resuming), [], 'held back while the read is out')
  const outcome = await subscribing
  outcome.replay()
  t.same(offsets(resuming), [1, 2], 'the replay, then what was held back')
  t.equal(resuming.encoded[1], live.encoded[0], 'the held event is the fan-out\'s encoding')
})

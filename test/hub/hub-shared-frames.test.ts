import t, { type Test } from 'tap'
import type { HistoryResult, SincePosition } from '../../lib/broker/broker.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { Hub } from '../../lib/hub/hub.js'
import { RecordingConnection } from '../support/broker-suite.js'

/**
 * What a reconnect storm costs per client: every client resuming a shared channel is sent
 * the same missed events, and the live ones held back while it replays. Each event's frames
 * are built once for all of them (sharedEncodingOf, lib/core/event.ts): the connections are
 * handed the same encoding, not one made per connection.
 */
/** A memory broker whose history reads, while `held`, answer only at `release()`: a slow Redis. */
class SlowReads extends MemoryBroker {
  held = false
  private waiting: Array<() => void> = []
  override async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    const result = await super.history(channel, since)
    if (this.held) await new Promise<void>((resolve) => this.waiting.push(resolve))
    return result
  }

  release (): void {
    this.held = false
    for (const resolve of this.waiting.splice(0)) resolve()
  }

  get reading (): number {
    return this.waiting.length
  }
}

function setup (t: Test) {
  let broker: SlowReads | undefined
  const hub = new Hub((deliver) => (broker = new SlowReads({ deliver, historySize: 10, historyTtlSeconds: 300 })), { maxChannelsPerConnection: 8 })
  t.teardown(() => hub.broker.close())
  return { hub, broker: broker as SlowReads }
}

t.test('clients resuming one channel are sent one encoding per missed event', async (t) => {
  const { hub, broker } = setup(t)
  const channel = 'room:shared'
  for (let n = 1; n <= 6; n++) await broker.publish({ channel, type: 't', payload: { n } })
  const { epoch } = await broker.position(channel)
  const clients = [new RecordingConnection(), new RecordingConnection(), new RecordingConnection()]
  for (const c of clients) {
    hub.add(c)
    const outcome = await hub.subscribe(c, [channel], { [channel]: { offset: 2, epoch } })
    outcome.replay()
  }
  for (const c of clients) t.same(c.received.map((e) => e.offset), [3, 4, 5, 6], 'every client gets what it missed')
  for (let i = 0; i < 4; i++) {
    t.ok(clients.every((c) => c.encodings[i] === clients[0].encodings[i]), `event ${i + 3}: one encoding for all three`)
  }
  t.equal(clients[1].encodings[0].wsFrameBytes, clients[0].encodings[0].wsFrameBytes, 'so one frame')
  // A rewind reads the same history: the same encodings again.
  const late = new RecordingConnection()
  hub.add(late)
  ;(await hub.subscribe(late, [channel], {}, 2)).replay()
  t.same(late.received.map((e) => e.offset), [5, 6])
  t.equal(late.encodings[0], clients[0].encodings[2], 'a rewind of the same events: the same encodings')
})

t.test('live events held back while clients replay are sent as the fan-out encoded them', async (t) => {
  const { hub, broker } = setup(t)
  const channel = 'room:live'
  await broker.publish({ channel, type: 't', payload: { n: 1 } })
  const { epoch } = await broker.position(channel)
  const clients = [new RecordingConnection(), new RecordingConnection()]
  for (const c of clients) hub.add(c)
  broker.held = true
  const subscribing = clients.map(async (c) => await hub.subscribe(c, [channel], { [channel]: { offset: 0, epoch } }))
  while (broker.reading < 2) await new Promise((resolve) => setImmediate(resolve))
  // Published while both reads are under way: held back for both, sent after their replay.
  await broker.publish({ channel, type: 't', payload: { n: 2 } })
  broker.release()
  for (const outcome of await Promise.all(subscribing)) outcome.replay()
  for (const c of clients) t.same(c.received.map((e) => e.offset), [1, 2], 'the missed event, then the held-back one, once each')
  t.equal(clients[0].encodings[1], clients[1].encodings[1], 'the held-back event: the fan-out\'s one encoding')
  t.equal(clients[0].encodings[0], clients[1].encodings[0], 'the replayed one: shared too')
})

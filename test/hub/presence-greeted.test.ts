import t, { type Test } from 'tap'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { Hub } from '../../lib/hub/hub.js'
import { RecordingConnection } from '../support/broker-suite.js'

// Audit (§8, "within two intervals of the change"): a new subscriber is greeted with the
// counts of the moment. When they went back, before the next tick, to what the channel's
// subscribers were last pushed, the tick saw nothing to push, and the newcomer kept its
// greeting's numbers until the channel changed again, however long.
const INTERVAL_MS = 40
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

function setup (t: Test) {
  const hub = new Hub((deliver) => new MemoryBroker({ deliver, historySize: 10, historyTtlSeconds: 60 }), {
    maxChannelsPerConnection: 8,
    presence: { prefixes: ['room:'], intervalMs: INTERVAL_MS }
  })
  t.teardown(async () => { await hub.close(); await hub.broker.close() })
  const connect = (userId: string) => {
    const connection = new RecordingConnection()
    connection.identity = { ...connection.identity, userId }
    hub.add(connection)
    return connection
  }
  return { hub, connect }
}

const last = (c: RecordingConnection) => c.presence.at(-1)?.counts

t.test('a subscriber greeted with counts that went back before the next push is told the counts of now', async (t) => {
  const { hub, connect } = setup(t)
  const alice = connect('alice')
  ;(await hub.subscribe(alice, ['room:x'])).replay()
  await sleep(3 * INTERVAL_MS)
  t.same(last(alice), { connections: 1, users: 1 }, 'alice alone, pushed')

  const bob = connect('bob')
  ;(await hub.subscribe(bob, ['room:x'])).replay()
  t.same(bob.presence.map((p) => p.counts), [{ connections: 2, users: 2 }], 'bob is greeted with the two of them')
  hub.unsubscribe(alice, ['room:x'])
  await sleep(3 * INTERVAL_MS)
  t.same(last(bob), { connections: 1, users: 1 }, 'within two intervals bob is told alice left')
})

t.test('subscribers already told the counts are not told them again', async (t) => {
  const { hub, connect } = setup(t)
  const alice = connect('alice')
  ;(await hub.subscribe(alice, ['room:y'])).replay()
  const carol = connect('carol')
  ;(await hub.subscribe(carol, ['room:y'])).replay()
  await sleep(3 * INTERVAL_MS)
  const aliceFrames = alice.presence.length
  t.same(last(alice), { connections: 2, users: 2 })

  const bob = connect('bob')
  ;(await hub.subscribe(bob, ['room:y'])).replay()
  hub.unsubscribe(bob, ['room:y'])
  await sleep(3 * INTERVAL_MS)
  t.equal(alice.presence.length, aliceFrames, 'alice, told 2 before and 2 now, gets no frame')
  t.same(carol.presence.map((p) => p.counts).slice(-1), [{ connections: 2, users: 2 }], 'nor carol')
})

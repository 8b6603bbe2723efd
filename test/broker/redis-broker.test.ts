import t, { type Test } from 'tap'
import type { Redis } from 'ioredis'
import { type BrokerOptions, BrokerUnavailableError } from '../../lib/broker/broker.js'
import type { StreamPosition } from '../../lib/core/event.js'
import { Hub } from '../../lib/hub/hub.js'
import { NodeRegistry } from '../../lib/ops/node-registry.js'
import { RedisBroker, type RedisBrokerOptions } from '../../lib/broker/redis-broker.js'
import { RedisLayout } from '../../lib/broker/redis-layout.js'
import type { NodeStats } from '../../lib/ops/stats.js'
import { brokerSuite, DeliveryRecorder, seamScenario, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { freePort } from '../support/ports.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

const available = await redisAvailable()
const prefix = uniquePrefix('redis-broker')

async function redisBroker (options: BrokerOptions & Partial<RedisBrokerOptions>): Promise<RedisBroker> {
  const broker = new RedisBroker({ url: REDIS_URL, keyPrefix: prefix, unsubscribeDelayMs: 50, ...options })
  if (!await broker.waitUntilReady(5000)) {
    await broker.close()
    throw new Error(`RedisBroker not ready at ${REDIS_URL}`)
  }
  return broker
}

/** A "node": a RedisBroker with its own connections and a recorder of what it delivers. */
async function node (t: Test, options: Partial<RedisBrokerOptions> = {}) {
  const recorder = new DeliveryRecorder()
  const resets: Array<{ channel: string, position: StreamPosition }> = []
  const broker = await redisBroker({
    deliver: recorder.deliver, reset: (channel, position) => resets.push({ channel, position }), historySize: 100, historyTtlSeconds: 300, ...options
  })
  t.teardown(() => broker.close())
  return { broker, recorder, resets }
}

const draft = (channel: string, n: number) => ({ channel, type: 'test:event', payload: { n } })

// Every key under the prefix is deleted when the file's tests end.
if (available) await redisClient(t, prefix)

t.test('RedisBroker passes the shared broker suite', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  brokerSuite(t, redisBroker)
})

t.test('two nodes on one Redis share offsets and both deliver every event once, in order', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const [a, b] = [await node(t), await node(t)]
  const channel = suiteChannel('two-nodes')
  await Promise.all([a.broker.subscribe(channel), b.broker.subscribe(channel)])
  const events = await Promise.all(Array.from({ length: 20 }, (_, n) => (n % 2 === 0 ? a : b).broker.publish(draft(channel, n))))
  t.same(events.map((e) => e.offset).sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1), 'one sequence across nodes')
  t.equal(new Set(events.map((e) => e.epoch)).size, 1)
  for (const [name, n] of [['a', a], ['b', b]] as const) {
    await n.recorder.until(`node ${name} gets 20 events`, () => n.recorder.of(channel).length >= 20)
    t.same(n.recorder.of(channel).map((e) => e.offset), Array.from({ length: 20 }, (_, i) => i + 1), `node ${name}: in order, once each`)
  }
  t.same(await a.broker.position(channel), await b.broker.position(channel))
})

t.test('a node delivers its own events from the publish reply, in order with other nodes\' events, each once', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const [a, b] = [await node(t), await node(t)]
  const channel = suiteChannel('own-events')
  await Promise.all([a.broker.subscribe(channel), b.broker.subscribe(channel)])
  await a.broker.publishBatch([draft(channel, 1), draft(channel, 2), draft(channel, 3)])
  t.same(a.recorder.of(channel).map((e) => e.offset), [1, 2, 3], 'delivered by the time the publish resolves, before any pub/sub copy')
  await a.broker.publish(draft(channel, 4))
  t.same(a.recorder.of(channel).map((e) => e.offset), [1, 2, 3, 4], 'a single publish too')

  // Both nodes publish at once: a node's own reply often arrives before the other's earlier events.
  const rounds = 15
  for (let r = 0; r < rounds; r++) {
    await Promise.all([
      a.broker.publishBatch([draft(channel, r), draft(channel, r)]),
      b.broker.publishBatch([draft(channel, r), draft(channel, r), draft(channel, r)]),
      a.broker.publish(draft(channel, r)),
      b.broker.publish(draft(channel, r))
    ])
  }
  const total = 4 + rounds * 7
  const all = Array.from({ length: total }, (_, i) => i + 1)
  for (const [name, n] of [['a', a], ['b', b]] as const) {
    await n.recorder.until(`node ${name} gets ${total} events`, () => n.recorder.of(channel).length >= total)
    t.same(n.recorder.of(channel).map((e) => e.offset), all, `node ${name}: in order, once each`)
  }
  t.same(a.resets, [], 'never a reset')
  t.same(b.resets, [], 'never a reset')
})

t.test('the hub seam across nodes: clients join on one node while another publishes', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const publisher = await node(t)
  const ref: { hub?: Hub } = {}
  const broker = await redisBroker({ deliver: (e) => ref.hub?.deliver(e), historySize: 500, historyTtlSeconds: 300 })
  t.teardown(() => broker.close())
  const hub = ref.hub = new Hub(() => broker, { maxChannelsPerConnection: 8 })
  await seamScenario(t, hub, publisher.broker)
})

t.test('the epoch changes when the channel keys are lost; old positions no longer recover', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const [a, b] = [await node(t), await node(t)]
  const channel = suiteChannel('epoch')
  await b.broker.subscribe(channel)
  let last
  for (let n = 1; n <= 3; n++) last = await a.broker.publish(draft(channel, n))
  const old = last!
  const layout = new RedisLayout(prefix)
  const keys = layout.keys(channel)
  t.equal(await redis.del(keys.meta, keys.history, layout.baseKey), 3,
    'meta, history and the epoch base dropped (as a restart without persistence would)')
  const fresh = await a.broker.publish(draft(channel, 4))
  t.equal(fresh.offset, 1, 'offsets restart...')
  t.not(fresh.epoch, old.epoch, '...in a new epoch')
  t.match(fresh.epoch, /^[A-Za-z0-9_-]+$/)
  t.same(await b.broker.history(channel, { offset: 3, epoch: old.epoch }),
    { events: [], position: { offset: 1, epoch: fresh.epoch }, recovered: false })
  await b.recorder.until('the new epoch reaches the subscriber', () => b.recorder.of(channel).length >= 4)
  t.same(b.recorder.of(channel).map((e) => [e.epoch, e.offset]),
    [[old.epoch, 1], [old.epoch, 2], [old.epoch, 3], [fresh.epoch, 1]])
})

t.test('a new Redis run (restart or failover, data kept or not) starts new epochs: no offset handed out twice', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const [a, b] = [await node(t), await node(t)]
  const channel = suiteChannel('runid')
  await b.broker.subscribe(channel)
  for (let n = 1; n <= 3; n++) await a.broker.publish(draft(channel, n))
  const old = await a.broker.position(channel)
  // What a promoted replica or a restarted server looks like to the scripts: another run_id.
  const layout = new RedisLayout(prefix)
  await redis.hset(layout.baseKey, 'runid', 'another-run')
  t.equal((await a.broker.position(channel)).offset, 0, 'the channel reads as empty in the new run')
  const fresh = await a.broker.publish(draft(channel, 4))
  t.equal(fresh.offset, 1, 'offsets restart...')
  t.not(fresh.epoch, old.epoch, '...in a new epoch')
  t.same(await b.broker.history(channel, { offset: 2, epoch: old.epoch }), { events: [], position: { offset: 1, epoch: fresh.epoch }, recovered: false },
    'a client resuming from the old run is told to reload')
  await b.recorder.until('the new epoch reaches the subscriber', () => b.recorder.of(channel).length >= 4)
  t.same(b.resets.map((r) => [r.channel, r.position]), [[channel, { offset: 0, epoch: fresh.epoch }]], 'and the live subscriber gets a reset first')
})

t.test('Redis pub/sub: subscribed on the first local subscriber, released after the last, without flapping', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const [a, b] = [await node(t, { unsubscribeDelayMs: 300 }), await node(t)]
  const channel = suiteChannel('pubsub')
  const pubsub = new RedisLayout(prefix).pubsubName(channel)
  const subscribers = async () => Number((await redis.pubsub('NUMSUB', pubsub) as Array<string | number>)[1])
  const held = async () => (await redis.pubsub('CHANNELS', `${new RedisLayout(prefix).pubsubPrefix}*`) as string[]).includes(pubsub)

  t.equal(await held(), false, 'nobody holds the channel before a subscriber')
  await a.broker.subscribe(channel)
  t.equal(await subscribers(), 1, 'node a holds it; node b, with no subscriber, does not')
  await b.broker.subscribe(channel)
  t.equal(await subscribers(), 2)

  await a.broker.unsubscribe(channel)
  await a.broker.subscribe(channel) // back within the delay: no UNSUBSCRIBE/SUBSCRIBE round
  await a.broker.publish(draft(channel, 1))
  await a.recorder.until('delivery after a quick re-subscribe', () => a.recorder.of(channel).length === 1)
  t.equal(await subscribers(), 2, 'a quick leave and rejoin does not flap')

  await a.broker.unsubscribe(channel)
  await b.broker.unsubscribe(channel)
  await eventually('both nodes released the channel', async () => !(await held()), 5000)
  t.pass('the channel is released after its last subscriber left')
})

t.test('lingering channels are bounded: past the limit the longest-lingering is unsubscribed at once', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const { broker } = await node(t, { unsubscribeDelayMs: 60_000, lingerLimit: 2 })
  const layout = new RedisLayout(prefix)
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => suiteChannel(`linger-${name}`))
  const holds = async (channel: string) => (await redis.pubsub('CHANNELS', layout.pubsubName(channel)) as string[]).length === 1

  for (const channel of [a, b, c, d]) await broker.subscribe(channel)
  await broker.unsubscribe(a)
  await broker.unsubscribe(b)
  t.ok(await holds(a) && await holds(b), 'two channels linger, still subscribed in Redis')
  await broker.unsubscribe(c)
  await eventually('the longest-lingering channel unsubscribed', async () => !(await holds(a)), 5000)
  t.ok(await holds(b) && await holds(c), 'the other two linger on')

  // One turn: b is released to make room for d, then subscribed again: its UNSUBSCRIBE
  // and SUBSCRIBE go in that order, and b ends held.
  void broker.unsubscribe(d)
  await broker.subscribe(b)
  t.equal(await holds(b), true, 'b, subscribed again after its release, is held in Redis')
  t.ok(await holds(c) && await holds(d), 'c and d linger')
})

t.test('a channel subscribed and released to make room within one turn ends unsubscribed in Redis', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const { broker } = await node(t, { unsubscribeDelayMs: 60_000, lingerLimit: 1 })
  const layout = new RedisLayout(prefix)
  const [held, fresh] = [suiteChannel('turn-held'), suiteChannel('turn-fresh')]
  const holds = async (channel: string) => (await redis.pubsub('CHANNELS', layout.pubsubName(channel)) as string[]).length === 1
  await broker.subscribe(held)

  // One turn: `fresh` is subscribed (its SUBSCRIBE queued), left (it lingers), and released
  // when `held` starts lingering too: its UNSUBSCRIBE must follow its SUBSCRIBE.
  const subscribing = broker.subscribe(fresh)
  void broker.unsubscribe(fresh)
  void broker.unsubscribe(held)
  await subscribing
  await broker.subscribe(suiteChannel('turn-sync')) // a later command on the same connection: the earlier ones are done
  t.equal(await holds(fresh), false, 'fresh is not left subscribed in Redis')
  t.equal(await holds(held), true, 'held lingers, subscribed')
})

t.test('a subscriber connection that drops catches up on what was published meanwhile', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const a = await node(t)
  // b reconnects only after a fixed pause, so the publishes below surely fall in the gap.
  const b = await node(t, { connectionName: `${prefix}gap-b`, redisOptions: { retryStrategy: () => 1500 } })
  const channel = suiteChannel('gap')
  const pubsub = new RedisLayout(prefix).pubsubName(channel)
  await b.broker.subscribe(channel)
  await a.broker.publish(draft(channel, 1))
  await b.recorder.until('the first event', () => b.recorder.of(channel).length === 1)

  const clients = (await redis.client('LIST') as string).split('\n').filter((line) => line.includes(` name=${prefix}gap-b:sub `))
  t.equal(clients.length, 1, 'found the subscriber connection of node b')
  await redis.client('KILL', 'ID', clients[0].match(/^id=(\d+)/)![1])
  for (let n = 2; n <= 4; n++) await a.broker.publish(draft(channel, n))
  t.equal(Number((await redis.pubsub('NUMSUB', pubsub) as Array<string | number>)[1]), 0, 'b was away during those publishes')

  await b.recorder.until('the missed events after the reconnect', () => b.recorder.of(channel).length >= 4, 10_000)
  await eventually('node b ready again', () => b.broker.isReady())
  await a.broker.publish(draft(channel, 5))
  await b.recorder.until('live delivery again', () => b.recorder.of(channel).length >= 5)
  t.same(b.recorder.of(channel).map((e) => e.offset), [1, 2, 3, 4, 5], 'nothing lost, nothing doubled, in order')
})

t.test('the subscriber back before the command connection: revocations are read again once that one is up, not before', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { broker } = await node(t)
  const connections = broker as unknown as { commands: Redis, subscriber: Redis }
  // What a resync does first is read the revocations with the command connection.
  const readWith: string[] = []
  broker.control.onResync(() => readWith.push(connections.commands.status))
  connections.commands.disconnect(false) // down until connected again below
  await eventually('the command connection is down', () => connections.commands.status === 'end')
  connections.subscriber.disconnect(true) // drops, and comes back by itself
  await eventually('the subscriber is back', () => connections.subscriber.status === 'ready')
  await new Promise((resolve) => setTimeout(resolve, 300)) // its re-subscribe is done
  t.same(readWith, [], 'no resync while the command connection is down (its read would fail, and nothing would retry it)')
  await connections.commands.connect()
  await eventually('the resync once the command connection is up', () => readWith.length > 0)
  t.same(readWith, ['ready'], 'once, with the command connection up')
})

t.test('Redis unreachable: not ready, publish/subscribe/history reject at once with BrokerUnavailableError', async (t) => {
  const recorder = new DeliveryRecorder()
  const broker = new RedisBroker({
    url: `redis://127.0.0.1:${await freePort()}`, keyPrefix: prefix, deliver: recorder.deliver, historySize: 10, historyTtlSeconds: 10
  })
  t.teardown(() => broker.close())
  t.equal(await broker.waitUntilReady(300), false)
  const settles = <T>(p: Promise<T>) => Promise.race([
    p, new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('still pending after 3 s')), 3000))
  ])
  await t.rejects(settles(broker.publish(draft('room:x', 1))), BrokerUnavailableError)
  await t.rejects(settles(broker.publishBatch([draft('room:x', 1), draft('room:y', 1)])), BrokerUnavailableError)
  await t.rejects(settles(broker.subscribe('room:x')), BrokerUnavailableError)
  await t.rejects(settles(broker.history('room:x', { offset: 0 })), BrokerUnavailableError)
  await t.rejects(settles(broker.position('room:x')), BrokerUnavailableError)
  await broker.close()
  t.equal(broker.isReady(), false)
})

t.test('node registry: live reports merge, a node that stops beating drops out after its TTL', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await redisClient(t)
  const a = await node(t)
  const registry = new NodeRegistry(redis, { keyPrefix: prefix, countChannels: async () => await a.broker.distinctChannels(), ttlMs: 400, channelsMaxAgeMs: 60_000 })
  const report = (nodeId: string, totalConnections: number): NodeStats => ({
    nodeId,
    broker: 'redis',
    startedAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    totalConnections,
    uniqueUsers: 1,
    userConnections: [{ userId: 'u1', connectionCount: totalConnections }],
    channels: 1,
    connectionsByTransport: { ws: totalConnections, sse: 0 }
  })
  await registry.beat(report('node-a', 2))
  await registry.beat(report('node-b', 3))
  t.same((await registry.nodes()).map((n) => [n.nodeId, n.totalConnections]), [['node-a', 2], ['node-b', 3]])
  // node-b goes silent (a crash); node-a keeps beating.
  await eventually('node-b expires', async () => {
    await registry.beat(report('node-a', 2))
    return (await registry.nodes()).length === 1
  }, 5000)
  t.same((await registry.nodes()).map((n) => n.nodeId), ['node-a'])
  t.same(await redis.smembers(`${prefix}nodes`), ['node-a'], 'the expired node is pruned from the set')
  await registry.leave('node-a')
  t.same(await registry.nodes(), [], 'a clean leave is immediate')

  const before = await registry.distinctChannels()
  await a.broker.subscribe(suiteChannel('count-1'))
  await a.broker.subscribe(suiteChannel('count-2'))
  await redis.del(`${prefix}channel-count`) // the count's max age (test/ops/node-registry.test.ts), passed
  t.equal(await registry.distinctChannels(), before + 2, 'distinct channels counted from the pub/sub channels held')
})

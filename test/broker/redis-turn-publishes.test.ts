import t, { type Test } from 'tap'
import type { Redis } from 'ioredis'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import { DeliveryRecorder, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { countSocketWrites, OwnRedis, readsProcessed, redisAvailable, redisClient } from '../support/redis-fixture.js'

/**
 * On one Redis, the publishes one turn of the event loop asks for leave in one socket write
 * (lib/broker/redis-turn-cork.ts), where an HTTP publish was one each. What must hold
 * besides: Redis runs them in the order asked, each caller gets its own answer (an error
 * included, which is that caller's alone), and a Redis that lost the functions still takes
 * every one of them, in order.
 */
const available = await redisAvailable()

async function broker (t: Test, url: string): Promise<RedisBroker> {
  // No probe PINGs (every 2 s by default): the connection's writes are the publishes' alone.
  const b = new RedisBroker({ url, keyPrefix: 'turn:', deliver: new DeliveryRecorder().deliver, historySize: 100, historyTtlSeconds: 300, probeIntervalMs: 3_600_000 })
  t.teardown(() => b.close())
  if (!await b.waitUntilReady(5000)) throw new Error('RedisBroker not ready')
  // Its CONFIG GETs at start, sent after it is ready: done before anything is counted.
  await b.serverSettingsChecked
  return b
}

const draft = (channel: string, n: number) => ({ channel, type: 'test:event', payload: { n } })

t.test('a turn\'s publishes reach Redis in one write, run in the order asked', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t) // only this test's clients: its read count is ours
  const b = await broker(t, own.url)
  const admin = await redisClient(t, undefined, own.url)
  const channel = suiteChannel('one-write')
  await b.publish(draft(channel, 0)) // the library loaded, the connection warm
  const other = suiteChannel('one-write-other')

  const before = await readsProcessed(admin)
  const writes = countSocketWrites(t, b.redis as Redis)
  const published = await Promise.all(Array.from({ length: 20 }, async (_, n) =>
    await b.publish(draft(n % 4 === 3 ? other : channel, n + 1))))
  const sent = writes()
  const after = await readsProcessed(admin)

  // Each publish written on its own is 20 writes.
  t.equal(sent, 1, `the 20 publishes left in one socket write (${sent})`)
  // One read for them and one for the INFO that counts, unless a busy machine split the write.
  t.comment(`Redis read them in ${after - before - 1} read(s)`)
  const onChannel = published.filter((e) => e.channel === channel)
  t.same(onChannel.map((e) => e.offset), onChannel.map((_, i) => i + 2), 'offsets follow the order of the calls')
  t.same(onChannel.map((e) => (e.payload as { n: number }).n), published.map((_, n) => n + 1).filter((n) => n % 4 !== 0),
    'each caller got its own event back')
  t.same(published.filter((e) => e.channel === other).map((e) => e.offset), [1, 2, 3, 4, 5], 'the other channel its own offsets')
  const history = await b.history(channel, { offset: 0 })
  t.same(history.events.map((e) => (e.payload as { n: number }).n), [0, ...onChannel.map((e) => (e.payload as { n: number }).n)],
    'and the stream holds them in that order')
})

t.test('a call that fails among a turn\'s publishes fails its caller alone', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t)
  const b = await broker(t, own.url)
  const admin = await redisClient(t, undefined, own.url)
  const [good, broken] = [suiteChannel('fine'), suiteChannel('broken')]
  // A channel whose meta key is of the wrong type: its script run errors in Redis.
  await admin.set(`turn:meta:${broken}`, 'not a hash')
  const outcomes = await Promise.allSettled([
    b.publish(draft(good, 1)), b.publish(draft(broken, 1)), b.publish(draft(good, 2))
  ])
  t.same(outcomes.map((o) => o.status), ['fulfilled', 'rejected', 'fulfilled'])
  t.same(outcomes.flatMap((o) => o.status === 'fulfilled' ? [o.value.offset] : []), [1, 2], 'the others published, in order')
  const failure = outcomes[1].status === 'rejected' ? outcomes[1].reason as Error : undefined
  t.match(failure?.message, /redis did not take the publish/, 'the broken one is told the publish was not taken')
  t.match(String((failure?.cause as Error | undefined)?.message), /WRONGTYPE|wrong kind/i, 'with Redis\'s own error as its cause')
})

t.test('a Redis that lost its functions takes a turn\'s publishes, in order', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t)
  const b = await broker(t, own.url)
  const channel = suiteChannel('flushed')
  const first = await b.publish(draft(channel, 0))
  await b.redis.function('FLUSH')
  const published = await Promise.all([1, 2, 3, 4, 5].map(async (n) => await b.publish(draft(channel, n))))
  t.same(published.map((e) => e.offset), [2, 3, 4, 5, 6], 'each published once, in the order asked')
  t.ok(published.every((e) => e.epoch === first.epoch), 'in the same stream')
  const history = await b.history(channel, { offset: 0 })
  t.same(history.events.map((e) => (e.payload as { n: number }).n), [0, 1, 2, 3, 4, 5])
})

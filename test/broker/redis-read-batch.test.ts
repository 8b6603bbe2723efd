import t, { type Test } from 'tap'
import type { Redis } from 'ioredis'
import type { HistoryResult } from '../../lib/broker/broker.js'
import { RedisBroker, type RedisBrokerOptions } from '../../lib/broker/redis-broker.js'
import { DeliveryRecorder, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { monitorRedis } from '../support/redis-monitor.js'
import { countSocketWrites, eventually, OwnRedis, readsProcessed, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

/**
 * A turn's history reads go to Redis together (lib/broker/redis-read-batch.ts): one write,
 * reads of one channel sharing a script run. What each reader gets must be exactly what its
 * own read would have got. MONITOR shows what Redis was actually sent.
 */
const available = await redisAvailable()
const prefix = uniquePrefix('read-batch')

// Every key under the prefix is deleted when the file's tests end.
if (available) await redisClient(t, prefix)

async function broker (t: Test, options: Partial<RedisBrokerOptions> = {}) {
  const recorder = new DeliveryRecorder()
  const b = new RedisBroker({ url: REDIS_URL, keyPrefix: prefix, deliver: recorder.deliver, historySize: 5, historyTtlSeconds: 300, ...options })
  t.teardown(() => b.close())
  if (!await b.waitUntilReady(5000)) throw new Error('RedisBroker not ready')
  return { broker: b, recorder }
}

/** What Redis receives from now on whose arguments mention `marker`; `until` waits for an ECHO of `done`. */
async function watch (t: Test, url: string, marker: string) {
  const monitor = await monitorRedis(t, url)
  const seen: string[][] = []
  monitor.onCommand((args) => {
    if (args.some((a) => a.includes(marker))) seen.push(args)
  })
  return {
    seen,
    async until (redis: Redis, done: string): Promise<void> {
      await redis.echo(`${marker}${done}`)
      await eventually('MONITOR shows the marker', () => seen.some((args) => args[0].toLowerCase() === 'echo' && args[1] === `${marker}${done}`))
    }
  }
}

const summary = (r: HistoryResult) => ({ offsets: r.events.map((e) => e.offset), position: r.position, recovered: r.recovered })

t.test('reads of one channel in one turn share a script run, and each gets what its own read gets', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t) // MONITOR sees only this test's traffic
  const { broker: b } = await broker(t, { url: own.url })
  const channel = suiteChannel('batched')
  for (let n = 1; n <= 8; n++) await b.publish({ channel, type: 'test:event', payload: { n } })
  const { epoch } = await b.position(channel)
  // History holds offsets 4..8 (size 5): the reads below straddle the trimmed part.
  const reads = [
    () => b.history(channel, { offset: 1 }), // trimmed: recovered false
    () => b.history(channel, { offset: 3 }), // 4..8
    () => b.history(channel, { offset: 6 }), // 7..8
    () => b.history(channel, { offset: 8 }), // nothing missed
    () => b.history(channel, { offset: 9 }), // ahead of the channel: refused
    () => b.history(channel, { offset: 6, epoch }),
    () => b.history(channel, { offset: 6, epoch: 'another-epoch' }),
    () => b.history(channel),
    () => b.recent(channel, 2),
    () => b.recent(channel, 10)
  ]
  const alone: HistoryResult[] = []
  for (const read of reads) alone.push(await read())

  const redis = await redisClient(t, undefined, own.url)
  const monitor = await watch(t, own.url, `${prefix}`)
  const together = await Promise.all(reads.map(async (read) => await read()))
  await monitor.until(redis, 'batched-done')

  t.same(together.map(summary), alone.map(summary), 'every reader gets what its own read got')
  t.same(together.map((r) => r.recovered), [false, true, true, true, false, true, false, true, true, true])
  t.same(together[1].events.map((e) => e.payload), [4, 5, 6, 7, 8].map((n) => ({ n })), 'the events themselves, not only their offsets')
  // since without an epoch, since in `epoch`, since in another epoch, position, rewind: 5 runs for 10 reads.
  const runs = monitor.seen.filter((args) => args[0].toLowerCase() === 'fcall')
  t.equal(runs.length, 5, 'one function run per channel, epoch and kind of read')
})

t.test('reads of many channels in one turn: one write, each channel answered', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t) // only this test's clients: its read count is ours
  // No probe PINGs (every 2 s by default): the read connection's writes are the reads' alone.
  const { broker: b } = await broker(t, { url: own.url, probeIntervalMs: 3_600_000 })
  await b.serverSettingsChecked // its CONFIG GETs, sent after ready, go on the same connection
  const admin = await redisClient(t, undefined, own.url)
  const channels = Array.from({ length: 30 }, (_, i) => suiteChannel(`many-${i}`))
  await Promise.all(channels.map(async (channel, i) => {
    for (let n = 0; n <= i % 4; n++) await b.publish({ channel, type: 'test:event', payload: { n } })
  }))
  const before = await readsProcessed(admin)
  const writes = countSocketWrites(t, b.historyConnection as Redis)
  const results = await Promise.all(channels.map(async (channel) => await b.history(channel, { offset: 0 })))
  const sent = writes()
  const after = await readsProcessed(admin)
  t.equal(sent, 1, `the 30 reads left in one socket write (${sent})`)
  // One read for them and one for the INFO that counts, unless a busy machine split the write.
  t.comment(`Redis read them in ${after - before - 1} read(s)`)
  t.same(results.map((r) => r.events.length), channels.map((_, i) => 1 + (i % 4)), 'each channel its own events')
  t.ok(results.every((r) => r.recovered && r.events.every((e, k) => e.offset === k + 1)))
})

t.test('a Redis that lost its functions still answers a batch of reads, and publishes', async (t) => {
  if (!requireService(t, 'redis-server', available)) return
  const own = await OwnRedis.start(t)
  const { broker: b } = await broker(t, { url: own.url })
  const [c1, c2] = [suiteChannel('lost-1'), suiteChannel('lost-2')]
  await b.publish({ channel: c1, type: 'test:event', payload: { n: 1 } })
  await b.redis.function('FLUSH')
  const [r1, r2, r3] = await Promise.all([b.history(c1, { offset: 0 }), b.history(c2), b.recent(c1, 5)])
  t.same([summary(r1).offsets, r1.recovered], [[1], true])
  t.same([r2.position.offset, r2.recovered], [0, true])
  t.same(summary(r3).offsets, [1])
  await b.redis.function('FLUSH')
  const next = await b.publish({ channel: c1, type: 'test:event', payload: { n: 2 } })
  t.same([next.offset, next.epoch], [2, r1.position.epoch], 'the publish loads them again and goes on in the same stream')
})

t.test('channels subscribed in one turn take one SUBSCRIBE, and each delivers', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t) // MONITOR sees only this test's traffic
  const { broker: b, recorder } = await broker(t, { url: own.url })
  const channels = Array.from({ length: 25 }, (_, i) => suiteChannel(`subscribe-${i}`))
  const redis = await redisClient(t, undefined, own.url)
  const monitor = await watch(t, own.url, `${prefix}`)
  await Promise.all(channels.map(async (channel) => await b.subscribe(channel)))
  await monitor.until(redis, 'subscribe-done')
  const subscribes = monitor.seen.filter((args) => args[0].toLowerCase() === 'subscribe')
  t.equal(subscribes.length, 1, 'one SUBSCRIBE')
  t.equal(subscribes[0]?.length, 1 + channels.length, 'naming every channel')
  const publisher = await broker(t, { url: own.url })
  await Promise.all(channels.map(async (channel) => await publisher.broker.publish({ channel, type: 'test:event', payload: {} })))
  await recorder.until('an event on every channel', () => channels.every((c) => recorder.of(c).length === 1))
  t.pass('every channel delivers')
})

t.test('history reads have a connection of their own: a publish is answered while a read\'s reply waits unread', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { broker: b } = await broker(t)
  const [read, published] = [suiteChannel('own-read'), suiteChannel('own-publish')]
  for (let n = 1; n <= 3; n++) await b.publish({ channel: read, type: 'test:event', payload: { n } })
  // The gateway stops reading what Redis sends on the read connection (a reply of megabytes still arriving).
  const stream = (b.historyConnection as Redis).stream
  stream.pause()
  let answered = false
  const history = b.history(read, { offset: 0 }).finally(() => { answered = true })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const event = await b.publish({ channel: published, type: 'test:event', payload: { n: 1 } })
  t.equal(event.offset, 1, 'the publish is answered')
  t.equal(answered, false, 'while the read is still waiting for its reply')
  stream.resume()
  t.same((await history).events.map((e) => e.payload), [{ n: 1 }, { n: 2 }, { n: 3 }], 'the read is answered once its reply is read')
})

t.test('the read connection killed: readiness says so until it is back, then reads are answered again', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const name = `read-kill-${process.pid}`
  const { broker: b } = await broker(t, { connectionName: name, probeIntervalMs: 3_600_000 })
  const admin = await redisClient(t)
  const channel = suiteChannel('read-kill')
  await b.publish({ channel, type: 'test:event', payload: { n: 1 } })
  const line = (await admin.client('LIST') as string).split('\n').find((l) => l.includes(` name=${name}:read `))
  if (line === undefined) return t.fail('no read connection in CLIENT LIST')
  const closed = new Promise((resolve) => (b.historyConnection as Redis).once('close', resolve))
  await admin.client('KILL', 'ID', /id=(\d+)/.exec(line)?.[1] as string)
  await closed
  t.equal(b.isReady(), false, 'not ready while the read connection is away')
  await b.publish({ channel, type: 'test:event', payload: { n: 2 } })
  t.pass('publishes go on meanwhile')
  await eventually('ready again', () => b.isReady())
  t.same((await b.history(channel, { offset: 0 })).events.map((e) => e.payload), [{ n: 1 }, { n: 2 }])
})

import t, { type Test } from 'tap'
import type { HistoryResult } from '../../lib/broker/broker.js'
import { EncodedEvent, sharedEncodingOf } from '../../lib/core/event.js'
import { RedisBroker, type RedisBrokerOptions } from '../../lib/broker/redis-broker.js'
import { DeliveryRecorder, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { eventually, OwnRedis, redisAvailable, redisClient } from '../support/redis-fixture.js'
import { monitorRedis } from '../support/redis-monitor.js'

/**
 * A subscriber's reads of a channel this instance holds are answered from the entries live
 * delivery brought (lib/broker/recent-entries.ts, RedisBroker.readLocally) when that is
 * exactly what Redis would answer, and from Redis otherwise. Each answer is compared with a read of an
 * instance that does not hold the channel (so reads Redis), and MONITOR on a Redis of the
 * test's own shows which reads went to Redis.
 */
const available = await redisAvailable()
const PREFIX = 'recent-reads:'
/** A subscriber's read, as the hub makes it; without it (the HTTP history route) Redis is always read. */
const D = { fromDelivery: true }

async function node (t: Test, url: string, options: Partial<RedisBrokerOptions> = {}) {
  const recorder = new DeliveryRecorder()
  const broker = new RedisBroker({ url, keyPrefix: PREFIX, deliver: recorder.deliver, historySize: 10, historyTtlSeconds: 300, unsubscribeDelayMs: 50, ...options })
  t.teardown(() => broker.close())
  if (!await broker.waitUntilReady(5000)) throw new Error('RedisBroker not ready')
  return { broker, recorder }
}

/** The read function calls Redis receives from now on, by channel. */
async function readCalls (t: Test, url: string) {
  const monitor = await monitorRedis(t, url)
  const calls: string[] = []
  monitor.onCommand((args) => {
    if (args[0]?.toLowerCase() === 'fcall' && args[1]?.endsWith('_read')) calls.push(args[3])
  })
  return {
    calls,
    /** Waits until MONITOR has shown an ECHO sent after everything before it. */
    async settle (): Promise<void> {
      const marker = `settle-${Math.random()}`
      let seen = false
      monitor.onCommand((args) => { if (args[1] === marker) seen = true })
      await (await redisClient(t, undefined, url)).echo(marker)
      await eventually('MONITOR caught up', () => seen)
    }
  }
}

const summary = (r: HistoryResult) => ({ events: r.events.map((e) => ({ ...e })), position: r.position, recovered: r.recovered })

t.test('a held channel: resumes and rewinds answered from memory, exactly as Redis answers them', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [publisher, holder, reader] = [await node(t, own.url), await node(t, own.url), await node(t, own.url)]
  const channel = suiteChannel('held')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 14; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n, text: `é€日本 ${n}` } })
  await holder.recorder.until('every event delivered', () => holder.recorder.of(channel).length === 14)
  const { epoch } = await reader.broker.position(channel)

  const asks: Array<(b: RedisBroker) => Promise<HistoryResult>> = [
    async (b) => await b.history(channel, undefined, D), // the position alone
    async (b) => await b.history(channel, { offset: 14, epoch }, D), // nothing missed
    async (b) => await b.history(channel, { offset: 9, epoch }, D), // 10..14
    async (b) => await b.history(channel, { offset: 4, epoch }, D), // 5..14: the last 10
    async (b) => await b.recent(channel, 3, D), // 12..14
    async (b) => await b.recent(channel, 10, D)
  ]
  const monitor = await readCalls(t, own.url)
  const local = []
  for (const ask of asks) local.push(summary(await ask(holder.broker)))
  await monitor.settle()
  t.same(monitor.calls, [], 'the holder read none of these from Redis')
  for (const [i, ask] of asks.entries()) t.same(local[i], summary(await ask(reader.broker)), `read ${i}: the same answer as Redis's`)
  t.same(local[2].events.map((e) => e.offset), [10, 11, 12, 13, 14])
  t.same(local[2].events[0].payload, { n: 10, text: 'é€日本 10' })

  await monitor.settle() // the reader's reads seen
  monitor.calls.length = 0
  const beyond = [
    async (b: RedisBroker) => await b.history(channel, { offset: 3, epoch }, D), // 4 was trimmed: recovered false
    async (b: RedisBroker) => await b.history(channel, { offset: 15, epoch }, D), // ahead of delivery
    async (b: RedisBroker) => await b.history(channel, { offset: 9, epoch: 'another-epoch' }, D),
    async (b: RedisBroker) => await b.history(channel, { offset: 9 }, D), // no epoch: Redis's current one
    async (b: RedisBroker) => await b.recent(channel, 11, D),
    async (b: RedisBroker) => await b.history(channel, { offset: 9, epoch }), // not a subscriber's read (HTTP)
    async (b: RedisBroker) => await b.recent(channel, 1)
  ]
  const fromRedis = []
  for (const ask of beyond) fromRedis.push(summary(await ask(holder.broker)))
  await monitor.settle()
  t.equal(monitor.calls.length, beyond.length, 'what memory cannot answer exactly is read from Redis')
  for (const [i, ask] of beyond.entries()) t.same(fromRedis[i], summary(await ask(reader.broker)), `read ${i} beyond: the same answer`)
  t.equal(fromRedis[0].recovered, false)
})

t.test('readers of a held channel share its events and their frames from the second read on', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [publisher, holder] = [await node(t, own.url), await node(t, own.url)]
  const channel = suiteChannel('shared')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 5; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n, text: `é€日本 ${n}`, nested: { list: [n, null, true] } } })
  await holder.recorder.until('every event delivered', () => holder.recorder.of(channel).length === 5)
  const { epoch } = await holder.broker.position(channel)
  const since = { offset: 1, epoch }
  const [first, second, third] = [await holder.broker.history(channel, since, D), await holder.broker.history(channel, since, D), await holder.broker.history(channel, since, D)]
  t.same(summary(first), summary(third), 'every reader gets the same answer')
  t.same(third.events.map((e) => e.offset), [2, 3, 4, 5])
  t.ok(third.events.every((e, i) => e === second.events[i]), 'the third reader gets the objects the second did')
  t.notOk(first.events.some((e, i) => e === second.events[i]), 'an entry read once is not kept decoded')
  for (const [i, event] of third.events.entries()) {
    const frame = sharedEncodingOf(event).wsFrameBytes
    t.equal(frame, sharedEncodingOf(second.events[i]).wsFrameBytes, `event ${event.offset}: one frame for both readers`)
    // Built around the payload's text in the entry: byte for byte the frame of the event encoded anew.
    t.same(frame, new EncodedEvent({ ...event }).wsFrameBytes, `event ${event.offset}: the frame an encoding of the event gives`)
  }
  t.same(JSON.parse(sharedEncodingOf(third.events[0]).ws), { type: 'test:event', channel, offset: 2, payload: { n: 2, text: 'é€日本 2', nested: { list: [2, null, true] } }, ts: third.events[0].ts })
})

t.test('own events and other instances\' events alike; a channel given up forgets its entries', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [a, b, reader] = [await node(t, own.url), await node(t, own.url), await node(t, own.url)]
  const channel = suiteChannel('mixed')
  await a.broker.subscribe(channel)
  await b.broker.subscribe(channel)
  for (let n = 1; n <= 6; n++) await (n % 2 === 0 ? a : b).broker.publish({ channel, type: 'test:event', payload: { n } })
  await a.recorder.until('a has all six', () => a.recorder.of(channel).length === 6)
  const { epoch } = await reader.broker.position(channel)
  const monitor = await readCalls(t, own.url)
  const local = summary(await a.broker.history(channel, { offset: 0, epoch }, D))
  await monitor.settle()
  t.same(monitor.calls, [], 'answered from memory')
  t.same(local, summary(await reader.broker.history(channel, { offset: 0, epoch })), 'its own entries are byte for byte what Redis keeps')

  await a.broker.unsubscribe(channel)
  await eventually('a released the channel', async () => {
    monitor.calls.length = 0
    await a.broker.history(channel, { offset: 2, epoch }, D)
    await monitor.settle()
    return monitor.calls.length === 1
  })
  t.pass('once released, its reads go to Redis')
})

t.test('entries older than Redis keeps them are not answered from memory', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  // History expires 2 s after the last publish: memory answers only within the first second.
  const [publisher, holder] = [await node(t, own.url, { historyTtlSeconds: 2 }), await node(t, own.url, { historyTtlSeconds: 2 })]
  const channel = suiteChannel('expiring')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 3; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  await holder.recorder.until('delivered', () => holder.recorder.of(channel).length === 3)
  const { epoch } = await publisher.broker.position(channel)
  const monitor = await readCalls(t, own.url)
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const late = await holder.broker.history(channel, { offset: 1, epoch }, D)
  await monitor.settle()
  t.same(monitor.calls.length, 1, 'past the margin, read from Redis')
  t.same(late.events.map((e) => e.offset), [2, 3], 'which still held them')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.match(await holder.broker.history(channel, { offset: 1, epoch }, D), { recovered: false }, 'and once Redis expired them, the answer is recovered:false, as from any instance')
})

t.test('a publish after the history expired: memory holds only what Redis holds, not the expired entries before it', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [publisher, holder, other] = [await node(t, own.url, { historyTtlSeconds: 2 }), await node(t, own.url, { historyTtlSeconds: 2 }), await node(t, own.url, { historyTtlSeconds: 2 })]
  const channel = suiteChannel('expired-then-published')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 3; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  await holder.recorder.until('delivered', () => holder.recorder.of(channel).length === 3)
  // Past the TTL (audit, session 26: rewinds answered from memory then had 2, 3, 4, Redis only 4).
  await new Promise((resolve) => setTimeout(resolve, 2300))
  await publisher.broker.publish({ channel, type: 'test:event', payload: { n: 4 } })
  await holder.recorder.until('delivered', () => holder.recorder.of(channel).length === 4)
  const { epoch } = await publisher.broker.position(channel)
  const fromRedis = await other.broker.recent(channel, 3)
  t.same(fromRedis.events.map((e) => e.offset), [4], 'Redis holds the last event only')
  t.same((await holder.broker.recent(channel, 3, D)).events.map((e) => e.offset), [4], 'a rewind of 3 on the holder: the same')
  t.match(await holder.broker.history(channel, { offset: 1, epoch }, D), { recovered: false, events: [] }, 'and a resume from before the silence is not recovered, as from any instance')
})

t.test('HISTORY_CACHE_BYTES=0: every read goes to Redis', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [publisher, holder] = [await node(t, own.url), await node(t, own.url, { historyCacheBytes: 0 })]
  const channel = suiteChannel('off')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 3; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  await holder.recorder.until('delivered', () => holder.recorder.of(channel).length === 3)
  const { epoch } = await publisher.broker.position(channel)
  const monitor = await readCalls(t, own.url)
  t.same((await holder.broker.history(channel, { offset: 1, epoch }, D)).events.map((e) => e.offset), [2, 3])
  t.same((await holder.broker.recent(channel, 1, D)).events.map((e) => e.offset), [3])
  t.same((await holder.broker.history(channel, undefined, D)).position.offset, 3)
  t.same((await holder.broker.history(channel, { offset: 3, epoch }, D)).recovered, true)
  await monitor.settle()
  t.equal(monitor.calls.length, 4, 'all four read from Redis')
})

t.test('events a dropped subscriber connection missed, filled from history, are answered from memory too', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const redis = await redisClient(t, undefined, own.url)
  const [publisher, reader] = [await node(t, own.url), await node(t, own.url)]
  // The holder reconnects only after a pause, so the publishes below surely fall in the gap.
  const holder = await node(t, own.url, { connectionName: 'recent-holder', redisOptions: { retryStrategy: () => 1000 } })
  const channel = suiteChannel('filled')
  await holder.broker.subscribe(channel)
  await publisher.broker.publish({ channel, type: 'test:event', payload: { n: 1 } })
  await holder.recorder.until('the first event', () => holder.recorder.of(channel).length === 1)
  const sub = (await redis.client('LIST') as string).split('\n').find((line) => line.includes(' name=recent-holder:sub '))
  await redis.client('KILL', 'ID', sub!.match(/^id=(\d+)/)![1])
  for (let n = 2; n <= 4; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n, nested: { list: [n, -0, 1.5] } } })
  await holder.recorder.until('the missed events, from history', () => holder.recorder.of(channel).length === 4, 10_000)
  await eventually('the holder ready again', () => holder.broker.isReady())
  const { epoch } = await reader.broker.position(channel)
  const monitor = await readCalls(t, own.url)
  const local = summary(await holder.broker.history(channel, { offset: 1, epoch }, D))
  await monitor.settle()
  t.same(monitor.calls, [], 'answered from memory')
  t.same(local, summary(await reader.broker.history(channel, { offset: 1, epoch })), 'the same events as Redis holds')
  t.same(local.events.map((e) => e.offset), [2, 3, 4])
})

t.test('a subscriber\'s read from Redis becomes the channel\'s copy: the next resumes need none', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  const [publisher, reader] = [await node(t, own.url, { historySize: 100 }), await node(t, own.url, { historySize: 100 })]
  const channel = suiteChannel('kept')
  for (let n = 1; n <= 40; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  const { epoch } = await reader.broker.position(channel)
  // A restarted instance: its clients come back with where they were.
  const fresh = await node(t, own.url, { historySize: 100 })
  await fresh.broker.subscribe(channel)
  const monitor = await readCalls(t, own.url)
  const sinces = [20, 30, 35, 40, 10]
  const answers = []
  for (const since of sinces) answers.push(summary(await fresh.broker.history(channel, { offset: since, epoch }, D)))
  answers.push(summary(await fresh.broker.recent(channel, 1, D)))
  await monitor.settle()
  t.same(monitor.calls.length, 2, 'the first resume read Redis; those within what it read did not; the one from before it did')
  t.same(answers[2].events.map((e) => e.offset), [36, 37, 38, 39, 40])
  t.same(answers[5].events.map((e) => e.offset), [40])
  for (const [i, since] of sinces.entries()) t.same(answers[i], summary(await reader.broker.history(channel, { offset: since, epoch })), `since ${since}: Redis's answer`)

  // Live events continue the copy.
  await publisher.broker.publish({ channel, type: 'test:event', payload: { n: 41 } })
  await fresh.recorder.until('the live event', () => fresh.recorder.of(channel).length === 1)
  await monitor.settle()
  monitor.calls.length = 0
  t.same((await fresh.broker.history(channel, { offset: 38, epoch }, D)).events.map((e) => e.offset), [39, 40, 41])
  await monitor.settle()
  t.same(monitor.calls, [], 'from memory')
})

t.test('entries read from Redis are as old as Redis says they are, less a margin for the clocks', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  // History expires 6 s after the last publish; entries read from Redis count as published
  // 2 s earlier, and memory keeps 1 s from the expiry: they answer for 3 s after the publish.
  const publisher = await node(t, own.url, { historyTtlSeconds: 6 })
  const holder = await node(t, own.url, { historyTtlSeconds: 6 })
  const channel = suiteChannel('kept-age')
  for (let n = 1; n <= 3; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  const publishedAt = Date.now()
  const { epoch } = await publisher.broker.position(channel)
  await holder.broker.subscribe(channel)
  await holder.broker.history(channel, { offset: 0, epoch }, D) // read from Redis, kept
  const monitor = await readCalls(t, own.url)
  await holder.broker.history(channel, { offset: 1, epoch }, D)
  await monitor.settle()
  if (Date.now() - publishedAt < 2500) t.equal(monitor.calls.length, 0, 'well within: from memory')
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, publishedAt + 3200 - Date.now())))
  monitor.calls.length = 0
  const late = await holder.broker.history(channel, { offset: 1, epoch }, D)
  await monitor.settle()
  t.equal(monitor.calls.length, 1, 'past the margin: from Redis')
  t.same(late.events.map((e) => e.offset), [2, 3])
})

t.test('a client back within the default linger finds its channel held: no SUBSCRIBE, and its resume answered from memory', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const own = await OwnRedis.start(t)
  // The default linger (no unsubscribeDelayMs): a reconnect after 1.5 s, past the old 1 s one.
  const holder = await node(t, own.url, { unsubscribeDelayMs: undefined })
  const publisher = await node(t, own.url)
  const channel = suiteChannel('linger')
  await holder.broker.subscribe(channel)
  for (let n = 1; n <= 3; n++) await publisher.broker.publish({ channel, type: 'test:event', payload: { n } })
  await holder.recorder.until('delivered', () => holder.recorder.of(channel).length === 3)
  const { epoch } = await holder.broker.position(channel)
  await holder.broker.unsubscribe(channel) // the client's socket dropped
  await publisher.broker.publish({ channel, type: 'test:event', payload: { n: 4 } }) // while it is away

  const monitor = await readCalls(t, own.url)
  const commands: string[] = []
  const watch = await monitorRedis(t, own.url)
  watch.onCommand((args) => commands.push(args[0]?.toLowerCase() ?? ''))
  await new Promise((resolve) => setTimeout(resolve, 1500))
  await holder.broker.subscribe(channel) // back, resuming from offset 3
  const resumed = await holder.broker.history(channel, { offset: 3, epoch }, D)
  await monitor.settle()
  t.same(resumed.events.map((e) => e.payload), [{ n: 4 }], 'the event published while away')
  t.equal(resumed.recovered, true)
  t.same(monitor.calls, [], 'no history read from Redis')
  t.notOk(commands.includes('subscribe') || commands.includes('unsubscribe'), 'no UNSUBSCRIBE, no SUBSCRIBE again')
})

import t, { type Test } from 'tap'
import type { Redis } from 'ioredis'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import { DeliveryRecorder, suiteChannel } from '../support/broker-suite.js'
import { requireService } from '../support/helper.js'
import { OwnRedis, redisAvailable, redisClient } from '../support/redis-fixture.js'

/**
 * A busy instance publishes faster than it reads its own entries back on its subscriber
 * connection; past `client-output-buffer-limit pubsub` Redis cuts that connection and a busy
 * channel can lose events (bench/README.md, "Lost events in a Kafka drain on Redis"). Its
 * publishes wait instead (lib/broker/subscriber-pacing.ts). Here the subscriber stops reading
 * for two seconds on a Redis whose limit is 1 MB, while 16 MB are published.
 */
const available = await redisAvailable()
const LIMIT = 'pubsub 1mb 512kb 2'
const BATCHES = 80
const EVENTS_PER_BATCH = 200
const PAYLOAD = 'x'.repeat(1000)

async function pausedSubscriber (t: Test) {
  const own = await OwnRedis.start(t)
  const admin = await redisClient(t, undefined, own.url)
  await admin.config('SET', 'client-output-buffer-limit', LIMIT)
  const recorder = new DeliveryRecorder()
  const paced: number[] = []
  const broker = new RedisBroker({
    url: own.url, keyPrefix: 'pacing:', deliver: recorder.deliver, historySize: 10, historyTtlSeconds: 60, onPublishPaced: (seconds) => paced.push(seconds)
  })
  t.teardown(() => broker.close())
  if (!await broker.waitUntilReady(5000)) throw new Error('RedisBroker not ready')
  await broker.serverSettingsChecked
  const subscriber = (broker as unknown as { subscriber: Redis }).subscriber
  let cut = 0
  subscriber.on('close', () => { cut++ })
  return { broker, recorder, subscriber, cuts: () => cut, admin, paced }
}

t.test('a publisher waits while its subscriber is not reading, and Redis never cuts the subscriber', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { broker, recorder, subscriber, cuts, admin, paced } = await pausedSubscriber(t)
  const channels = [suiteChannel('paced-a'), suiteChannel('paced-b')]
  for (const channel of channels) await broker.subscribe(channel)
  const subscriberId = Number(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub').then((list) => /id=(\d+)/.exec(String(list))?.[1]))

  let published = 0
  const publishing = (async () => {
    for (let b = 0; b < BATCHES; b++) {
      const drafts = Array.from({ length: EVENTS_PER_BATCH }, (_, i) => ({ channel: channels[i % 2], type: 'test:event', payload: { b, i, pad: PAYLOAD } }))
      await broker.publishBatch(drafts)
      published += drafts.length
    }
  })()
  // The subscriber stops reading: its entries pile up in the kernel, then in Redis's buffer for it.
  subscriber.stream.pause()
  const atPause = published
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const duringPause = published - atPause
  subscriber.stream.resume()
  await publishing

  // 1.2 KB an entry: 256 KB of budget is ~200 entries; the batch in flight when the reading stopped may add one more.
  t.ok(duringPause <= 3 * EVENTS_PER_BATCH, `publishing waited while the subscriber did not read (${duringPause} events published meanwhile)`)
  const waited = paced.reduce((a, b) => a + b, 0)
  t.ok(waited > 0.5, `the wait was reported (gateway_publish_paced_seconds_total): ${waited.toFixed(2)} s`)
  await recorder.until('every event', () => recorder.events.length === BATCHES * EVENTS_PER_BATCH, 30_000)
  t.equal(cuts(), 0, 'the subscriber connection was never closed')
  const list = String(await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))
  t.match(list, new RegExp(`id=${subscriberId} `), 'Redis still has the same subscriber connection')
  for (const channel of channels) {
    const offsets = recorder.of(channel).map((e) => e.offset)
    t.same(offsets, Array.from({ length: offsets.length }, (_, i) => i + 1), `${channel}: every offset once, in order`)
    t.equal(offsets.length, BATCHES * EVENTS_PER_BATCH / 2)
  }
})

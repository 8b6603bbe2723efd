import t from 'tap'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import type { PresenceBackend, PresenceShare } from '../../lib/core/presence.js'
import { PresenceTracker } from '../../lib/hub/presence-tracker.js'
import { requireService } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// Every held share is written again about once per refreshMs, unchanged or not, so Redis's
// copy never expires under a quiet channel; and it is spread over the ticks, not every
// channel in one tick (50k product channels would be 50k writes at once, hourly).
const redisUp = await redisAvailable()
const CHANNELS = 40
const INTERVAL_MS = 25
const REFRESH_MS = 1000

t.test('the refresh rewrites every held share within a pass, a slice per tick', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('presence-refresh')
  const redis = await redisClient(t, prefix)
  const broker = new RedisBroker({ url: REDIS_URL, keyPrefix: prefix, deliver: () => {}, historySize: 10, historyTtlSeconds: 60, nodeId: 'node-a' })
  t.teardown(() => broker.close())
  await eventually('the broker is ready', () => broker.isReady())
  const backend = broker.presence as PresenceBackend
  // The real backend, with each write's tick noted (a tick is INTERVAL_MS long).
  const writes: Array<{ channel: string, at: number }> = []
  const counted: PresenceBackend = {
    load: async (channel) => await backend.load(channel),
    beat: async () => await backend.beat(),
    leave: async () => await backend.leave(),
    onShare: (listener) => backend.onShare(listener),
    write: async (channel: string, share: PresenceShare | null) => {
      writes.push({ channel, at: Date.now() })
      await backend.write(channel, share)
    }
  }
  const tracker = new PresenceTracker({ intervalMs: INTERVAL_MS, refreshMs: REFRESH_MS, backend: counted, push: () => {} })
  t.teardown(() => tracker.close())
  const channels = Array.from({ length: CHANNELS }, (_, i) => `product:${i}`)
  for (const channel of channels) {
    await tracker.open(channel)
    tracker.joined(channel, `u${channel}`)
  }
  const shareKey = (channel: string) => `${prefix}presence:${channel}`
  await eventually('every share written once', async () => (await Promise.all(channels.map(async (c) => await redis.exists(shareKey(c))))).every((n) => n === 1))

  // As if every share had expired in Redis: the refresh writes each one back within a pass.
  const gone = Date.now()
  await redis.del(...channels.map(shareKey))
  await eventually('every share rewritten by the refresh', async () =>
    (await Promise.all(channels.map(async (c) => await redis.exists(shareKey(c))))).every((n) => n === 1), 10 * REFRESH_MS)

  const refreshes = writes.filter((w) => w.at >= gone)
  t.ok(refreshes.length >= CHANNELS, 'each channel was written again')
  // A slice is ceil(40 × 25 / 1000) = 1 channel a tick: no burst of all 40 in one tick.
  const perWindow = new Map<number, number>()
  for (const w of refreshes) perWindow.set(Math.floor(w.at / (4 * INTERVAL_MS)), (perWindow.get(Math.floor(w.at / (4 * INTERVAL_MS))) ?? 0) + 1)
  t.ok(Math.max(...perWindow.values()) < CHANNELS / 2, `spread over the ticks (at most ${Math.max(...perWindow.values())} writes in 4 ticks)`)
})

import t from 'tap'
import type { PresenceBackend, PresenceShare } from '../../lib/core/presence.js'
import { PresenceTracker } from '../../lib/hub/presence-tracker.js'

// Audit: one user subscribing to fresh presence channels and leaving them (within every
// limit) made each tick write thousands of shares in one synchronous stretch, stalling the
// instance 0.3–0.9 s every interval. A channel joined and left between two ticks was never
// told to anyone, so it has nothing to withdraw: it costs Redis nothing.
const INTERVAL_MS = 40
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

function recordingBackend () {
  const writes: Array<{ channel: string, share: PresenceShare | null }> = []
  let left = 0
  const backend: PresenceBackend = {
    load: async () => new Map(),
    write: async (channel, share) => { writes.push({ channel, share }) },
    onShare: () => {},
    beat: async () => ({ live: new Set(['self']), rejoined: false }),
    leave: async () => { left++ }
  }
  return { backend, writes, left: () => left }
}

t.test('channels joined and left between two ticks cost no write; one held across a tick is written, then withdrawn', async (t) => {
  const { backend, writes } = recordingBackend()
  const tracker = new PresenceTracker({ intervalMs: INTERVAL_MS, backend, push: () => {} })
  t.teardown(async () => { await tracker.close() })
  for (let i = 0; i < 2000; i++) {
    const channel = `room:churn-${i}`
    await tracker.open(channel)
    tracker.joined(channel, 'u1')
    tracker.left(channel, 'u1', true)
  }
  await sleep(4 * INTERVAL_MS)
  t.same(writes, [], 'nothing written for 2000 channels nobody held at a tick')
  t.equal(tracker.channelCount, 0, 'and nothing kept for them')

  await tracker.open('room:held')
  tracker.joined('room:held', 'u1')
  await sleep(3 * INTERVAL_MS)
  t.ok(writes.length > 0, 'a channel held at a tick is told')
  // (and rewritten by the rolling refresh, at least one channel a tick)
  t.ok(writes.every((w) => w.channel === 'room:held' && w.share?.connections === 1), 'its share, and nothing else')
  tracker.left('room:held', 'u1', true)
  await sleep(3 * INTERVAL_MS)
  t.same(writes.at(-1), { channel: 'room:held', share: null }, 'and withdrawn once left')
})

t.test('a tick with thousands of shares to write lets other work run between slices of them', async (t) => {
  const writes: string[] = []
  let ranAfter: number | undefined
  const backend: PresenceBackend = {
    load: async () => new Map(),
    write: async (channel) => {
      if (writes.length === 0) setImmediate(() => { ranAfter = writes.length })
      writes.push(channel)
    },
    onShare: () => {},
    beat: async () => ({ live: new Set(['self']), rejoined: false }),
    leave: async () => {}
  }
  const tracker = new PresenceTracker({ intervalMs: INTERVAL_MS, backend, push: () => {} })
  t.teardown(async () => { await tracker.close() })
  for (let i = 0; i < 2000; i++) {
    await tracker.open(`room:many-${i}`)
    tracker.joined(`room:many-${i}`, 'u1')
  }
  await sleep(4 * INTERVAL_MS)
  t.ok(writes.length >= 2000, `every share written (${writes.length})`)
  t.ok(ranAfter !== undefined && ranAfter <= 512, `work queued at the first write ran after ${ranAfter} writes, not after all of them`)
})

t.test('a withdrawal that fails is tried again at the next tick', async (t) => {
  const writes: Array<{ channel: string, share: PresenceShare | null }> = []
  let failNext = false
  const backend: PresenceBackend = {
    load: async () => new Map(),
    write: async (channel, share) => {
      if (failNext && share === null) {
        failNext = false
        throw new Error('redis away')
      }
      writes.push({ channel, share })
    },
    onShare: () => {},
    beat: async () => ({ live: new Set(['self']), rejoined: false }),
    leave: async () => {}
  }
  const tracker = new PresenceTracker({ intervalMs: INTERVAL_MS, backend, push: () => {} })
  t.teardown(async () => { await tracker.close() })
  await tracker.open('room:w')
  tracker.joined('room:w', 'u1')
  await sleep(3 * INTERVAL_MS)
  failNext = true
  tracker.left('room:w', 'u1', true)
  await sleep(4 * INTERVAL_MS)
  t.same(writes.filter((w) => w.share === null).map((w) => w.channel), ['room:w'], 'withdrawn once Redis answered again')
  t.equal(tracker.channelCount, 0, 'with no state kept for it')
})

t.test('closing withdraws every share told and leaves the heartbeats', async (t) => {
  const { backend, writes, left } = recordingBackend()
  const tracker = new PresenceTracker({ intervalMs: INTERVAL_MS, backend, push: () => {} })
  for (const channel of ['room:a', 'room:b']) {
    await tracker.open(channel)
    tracker.joined(channel, 'u1')
  }
  await sleep(3 * INTERVAL_MS)
  t.same(new Set(writes.map((w) => w.channel)), new Set(['room:a', 'room:b']), 'both told')
  const before = writes.length
  await tracker.close()
  t.same(writes.slice(before).map((w) => [w.channel, w.share]).sort(), [['room:a', null], ['room:b', null]], 'both withdrawn')
  t.equal(left(), 1, 'and it left the heartbeats')
})

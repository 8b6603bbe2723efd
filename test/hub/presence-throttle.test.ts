import { setTimeout as delay } from 'node:timers/promises'
import t from 'tap'
import type { PresenceBackend } from '../../lib/core/presence.js'
import { PresenceTracker } from '../../lib/hub/presence-tracker.js'

// At most one push per channel per interval (docs/protocol.md, Presence), measured between
// pushes, not between ticks: a tick pushes after its heartbeat's round trip, so a slow
// heartbeat followed by a fast one brought two pushes closer than the interval.
const INTERVAL_MS = 200

t.test('two pushes of a channel are at least an interval apart, however long each tick\'s heartbeat took', async (t) => {
  let beatMs = 0
  const backend: PresenceBackend = {
    load: async () => new Map(),
    write: async () => {},
    onShare: () => {},
    beat: async () => {
      await delay(beatMs)
      return { live: new Set(['me']), rejoined: false }
    }
  }
  const pushes: Array<{ at: number, connections: number }> = []
  let changed: () => void = () => {}
  const tracker = new PresenceTracker({
    intervalMs: INTERVAL_MS,
    backend,
    push: (_channel, counts) => {
      pushes.push({ at: performance.now(), connections: counts.connections })
      changed()
    }
  })
  t.teardown(() => tracker.close())
  // The tracker's timer is unref'd: something must keep the process up meanwhile.
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => clearInterval(keepAlive))
  await tracker.open('room:r')
  // The first push's tick beats slowly; the next one quickly.
  beatMs = 80
  const first = new Promise<void>((resolve) => { changed = resolve })
  tracker.joined('room:r', 'a')
  await first
  beatMs = 0
  const second = new Promise<void>((resolve) => { changed = resolve })
  tracker.joined('room:r', 'b')
  await second
  t.same(pushes.map((p) => p.connections), [1, 2])
  const gap = pushes[1].at - pushes[0].at
  t.ok(gap >= INTERVAL_MS - 1, `pushes ${Math.round(gap)} ms apart, interval ${INTERVAL_MS} ms`)
  t.ok(gap < 2 * INTERVAL_MS, 'and the change is still told within two intervals')
})

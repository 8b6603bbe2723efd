import { setTimeout as delay } from 'node:timers/promises'
import t from 'tap'
import { PRESENCE_BEATS_PER_INTERVAL, type PresenceBackend } from '../../lib/core/presence.js'
import { PresenceTracker } from '../../lib/hub/presence-tracker.js'

// At most one push per channel per interval (docs/protocol.md, Presence), measured between
// pushes, not between ticks: a tick pushes after its heartbeat's round trip, so a slow
// heartbeat followed by a fast one brought two pushes closer than the interval.
const INTERVAL_MS = 200

type Heartbeat = Awaited<ReturnType<PresenceBackend['beat']>>
const ALIVE: Heartbeat = { live: new Set(['me']), rejoined: false }

/** A backend of one instance, with nothing shared, whose heartbeat is `beat`. */
const withHeartbeat = (beat: () => Promise<Heartbeat>): PresenceBackend => ({
  load: async () => new Map(),
  write: async () => {},
  onShare: () => {},
  leave: async () => {},
  beat
})

t.test('two pushes of a channel are at least an interval apart, however long each tick\'s heartbeat took', async (t) => {
  let beatMs = 0
  // The tracker's own clock: a heartbeat every step, PRESENCE_BEATS_PER_INTERVAL steps an interval.
  let beats = 0
  const backend = withHeartbeat(async () => {
    beats++
    await delay(beatMs)
    return ALIVE
  })
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
  const joinedAt = beats
  tracker.joined('room:r', 'b')
  await second
  const stepsToTell = beats - joinedAt
  t.same(pushes.map((p) => p.connections), [1, 2])
  const gap = pushes[1].at - pushes[0].at
  // The tracker keeps whole ms (monotonicMs), and each push's time is taken here a moment
  // after it: a pause between the two (GC) made a gap read 198 ms (Node 24 CI). Without the
  // throttle the gap is the interval less the slow heartbeat (80 ms): a 10 ms slack tells.
  t.ok(gap >= INTERVAL_MS - 10, `pushes ${Math.round(gap)} ms apart, interval ${INTERVAL_MS} ms`)
  // Counted in the tracker's steps, not in ms: a loaded machine's timers lag by hundreds of ms.
  t.ok(stepsToTell <= 2 * PRESENCE_BEATS_PER_INTERVAL, `and the change is still told within two intervals (${stepsToTell} steps)`)
})

t.test('a tick that comes due while the last one waits on its heartbeat runs when that one is done, not an interval later', async (t) => {
  // Heartbeats answer only when the test lets them (a Redis slower than an interval).
  let beats = 0
  const held: Array<() => void> = []
  const backend = withHeartbeat(async () => {
    beats++
    return await new Promise((resolve) => held.push(() => resolve(ALIVE)))
  })
  const pushes: number[] = []
  const tracker = new PresenceTracker({ intervalMs: 40, backend, push: (_channel, counts) => pushes.push(counts.connections) })
  t.teardown(() => tracker.close())
  // Counts the tracker's steps (10 ms): a timer of the same period, made just after its own,
  // fires in the same timer list right after it, however much the machine's load delays both.
  let steps = 0
  const stepCounter = setInterval(() => { steps++ }, 10)
  t.teardown(() => clearInterval(stepCounter))
  await tracker.open('room:r')
  tracker.joined('room:r', 'a')
  // Step 0's tick waits on its heartbeat past step 4, the next tick.
  const stepsSoFar = (): number => steps
  for (let waited = 0; stepsSoFar() < 10 && waited < 10_000; waited += 5) await delay(5)
  // Released in the check phase, and counted by the next immediate of that same phase: the
  // promise continuations of the release all run in between, and no timer can (released from
  // a timer's callback, a tracker step already due in that timers phase began one heartbeat
  // more before the count).
  let before = 0
  await new Promise((resolve) => {
    setImmediate(() => {
      before = beats
      for (const release of held.splice(0)) release()
    })
    setImmediate(resolve)
  })
  t.same(pushes, [1], 'the held tick pushed')
  t.equal(beats, before + 1, 'and the tick that came due meanwhile has begun (its heartbeat)')
  for (const release of held.splice(0)) release()
})

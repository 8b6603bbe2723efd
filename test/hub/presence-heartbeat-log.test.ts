import t from 'tap'
import { RedisBroker } from '../../lib/broker/redis-broker.js'
import type { PresenceBackend } from '../../lib/core/presence.js'
import { PresenceTracker } from '../../lib/hub/presence-tracker.js'
import { requireService } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, uniquePrefix } from '../support/redis-fixture.js'

// A heartbeat runs several times a second: an outage is said once (warn), and its end
// once (info); the beats that fail before the first one worked (the broker still
// connecting at start) are not an outage.
const redisUp = await redisAvailable()

t.test('presence heartbeat failures: not at start, then once per outage, and its end', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const broker = new RedisBroker({ url: REDIS_URL, keyPrefix: uniquePrefix('presence-beat-log'), deliver: () => {}, historySize: 10, historyTtlSeconds: 60, nodeId: 'node-a' })
  t.teardown(() => broker.close())
  await eventually('the broker is ready', () => broker.isReady())
  const backend = broker.presence as PresenceBackend
  // The real backend, failing while `down` as a lost connection does.
  let down = true
  let beats = 0
  let failed = 0
  const flaky: PresenceBackend = {
    load: async (channel) => await backend.load(channel),
    onShare: (listener) => backend.onShare(listener),
    write: async (channel, share) => await backend.write(channel, share),
    leave: async () => await backend.leave(),
    beat: async () => {
      beats++
      // Decided when the answer comes, so answers after `down` was set all fail (heartbeats
      // may overlap on a loaded machine).
      const answer = await backend.beat()
      if (down) {
        failed++
        throw new Error("Stream isn't writeable and enableOfflineQueue options is false")
      }
      return answer
    }
  }
  const lines: Array<{ level: string, msg: string, obj: object }> = []
  const log = {
    warn: (obj: object, msg: string) => lines.push({ level: 'warn', msg, obj }),
    info: (obj: object, msg: string) => lines.push({ level: 'info', msg, obj })
  }
  const tracker = new PresenceTracker({ intervalMs: 40, backend: flaky, push: () => {}, log })
  t.teardown(() => tracker.close())

  await eventually('beats fail at start', () => failed >= 3)
  down = false
  const upAt = beats
  await eventually('a beat works', () => beats >= upAt + 2)
  t.same(lines, [], 'nothing said about the failures before the first beat worked')

  down = true
  failed = 0
  await eventually('an outage of several beats', () => failed >= 5)
  t.equal(lines.length, 1, 'one line for the whole outage')
  t.match(lines[0], { level: 'warn', msg: /^presence: heartbeat failed/ })
  t.match((lines[0].obj as { err: Error }).err.message, /isn't writeable/)

  down = false
  await eventually('its end is said', () => lines.length >= 2)
  t.match(lines[1], { level: 'info', msg: 'presence: heartbeat works again' })
  t.ok((lines[1].obj as { failed: number }).failed >= 5, 'with how many beats failed')
  const after = beats
  await eventually('beats go on', () => beats >= after + 3)
  t.equal(lines.length, 2, 'nothing more while it works')
})

t.test('presence writes that fail in a tick: one line for the tick, naming how many channels', async (t) => {
  // Audit: one line per channel per interval while Redis was down (543 in a minute).
  if (!requireService(t, 'Redis', redisUp)) return
  const broker = new RedisBroker({ url: REDIS_URL, keyPrefix: uniquePrefix('presence-write-log'), deliver: () => {}, historySize: 10, historyTtlSeconds: 60, nodeId: 'node-w' })
  t.teardown(() => broker.close())
  await eventually('the broker is ready', () => broker.isReady())
  const backend = broker.presence as PresenceBackend
  let writes = 0
  const failing: PresenceBackend = {
    load: async (channel) => await backend.load(channel),
    onShare: (listener) => backend.onShare(listener),
    write: async () => { writes++; throw new Error("Stream isn't writeable and enableOfflineQueue options is false") },
    leave: async () => await backend.leave(),
    beat: async () => await backend.beat()
  }
  const lines: Array<{ msg: string, obj: { channels?: number } }> = []
  const log = { warn: (obj: object, msg: string) => lines.push({ msg, obj }), info: () => {} }
  // Ticks far enough apart that the one looked at is alone (failed channels are tried again each tick).
  const tracker = new PresenceTracker({ intervalMs: 1000, backend: failing, push: () => {}, log })
  t.teardown(() => tracker.close())
  for (let i = 0; i < 20; i++) tracker.joined(`room:w${i}`, `u${i}`)
  await eventually('the tick tried every channel', () => writes >= 20)
  await eventually('and said so', () => lines.some((l) => /could not share/.test(l.msg)))
  const said = lines.filter((l) => /could not share/.test(l.msg))
  t.equal(said.length, 1, `one line, not one per channel: ${said.length}`)
  t.equal(said[0].obj.channels, 20)
})

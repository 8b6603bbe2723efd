import t from 'tap'
import { requireService, startServer, token, WsClient } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'
import type { WsSession } from '../../lib/transport/ws-session.js'

// Frames under the rate limit can still arrive faster than their work is done (here:
// subscribes to many channels new to a Redis instance, each a Redis round trip or more).
// What waits is bounded: past MAX_QUEUED_WEIGHT the socket is not read until half of it is
// done, so a client cannot grow the server's memory by sending, and nothing it sent is lost.
const redisUp = await redisAvailable()

t.test('a client whose frames come faster than they are handled is read no faster than they are handled, and every frame is answered in order', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('ws-inbound')
  await redisClient(t, prefix)
  // The user's inbound byte budget (4 MiB bursts) is not what this measures: a fast machine
  // sent the 4.8 MB within a burst's refill, and frames refused for it carry no id to wait for.
  const limits = { WS_RATE_LIMIT_PER_SECOND: 1000, WS_RATE_LIMIT_BURST: 1000, WS_SUBSCRIBES_BURST: 100_000, NEW_CHANNELS_BURST: 100_000, WS_INBOUND_BYTES_BURST: 64 * 1024 * 1024 }
  const { app, wsUrl } = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, ...limits })
  const client = await WsClient.connect(t, wsUrl, token('q1'))
  const session = [...app.hub.connections()][0] as WsSession
  let paused = false
  const watch = setInterval(() => { paused ||= session.socket.isPaused }, 1)
  t.teardown(() => clearInterval(watch))

  // 80 frames of ~60 KB (an ignored field pads them): 4.8 MB sent at once.
  const padding = 'x'.repeat(60_000)
  const count = 80
  for (let i = 0; i < count; i++) {
    const channels = Array.from({ length: 100 }, (_, c) => `room:q${i >> 1}-${c}`)
    client.send({ type: i % 2 === 0 ? 'subscribe' : 'unsubscribe', id: `f${i}`, payload: { channels }, padding })
  }
  await eventually('every frame answered', () => client.frames.filter((f) => typeof f.id === 'string' && f.id.startsWith('f')).length === count, 30_000)
  const answers = client.frames.filter((f) => typeof f.id === 'string' && f.id.startsWith('f'))
  t.same(answers.map((f) => f.id), Array.from({ length: count }, (_, i) => `f${i}`), 'answered in the order sent')
  t.same([...new Set(answers.map((f) => f.type))].sort(), ['subscribed', 'unsubscribed'], 'each one done, none refused')
  t.ok(paused, 'the socket was not read while too much waited')
  await eventually('reading again', () => !session.socket.isPaused)
  t.same((await client.request({ type: 'system:ping', id: 'after' })).type, 'system:pong', 'the connection goes on')
})

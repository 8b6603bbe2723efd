import t from 'tap'
import WebSocket from 'ws'
import { requireService, startServer, token } from '../support/helper.js'
import { eventually, OwnRedis, redisAvailable } from '../support/redis-fixture.js'

const available = await redisAvailable()

/**
 * A WebSocket that connects while the gateway's Redis is away (an outage, a shard's failover):
 * closed with 1011 (docs/protocol.md), counted as refused for `broker_unavailable`, and logged
 * as one warning, not an error with a stack per connection (WS-on-cluster audit, session 29).
 */
t.test('a connect while Redis is away: 1011, counted, one warning line', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await OwnRedis.start(t)
  const lines: Array<{ level: number, msg: string, err?: unknown }> = []
  const { url, wsUrl } = await startServer(t, { REDIS_URL: redis.url }, {
    logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } }
  })
  await redis.kill()
  const code = await new Promise<number>((resolve) => {
    const socket = new WebSocket(`${wsUrl}?token=${token('bd1')}`)
    socket.on('error', () => {})
    socket.on('close', (c) => resolve(c))
  })
  t.equal(code, 1011)
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="ws",reason="broker_unavailable"\} 1/)
  const about = lines.filter((l) => l.msg.startsWith('could not subscribe a new connection'))
  t.equal(about.length, 1)
  t.equal(about[0].level, 40, 'a warning')
  t.equal(about[0].err, undefined, 'no stack')
})

t.test('subscribes while Redis is away: an internal error frame each that says so, the connection kept, one warning line for them all', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const redis = await OwnRedis.start(t)
  const lines: Array<{ level: number, msg: string, err?: unknown }> = []
  const { wsUrl } = await startServer(t, { REDIS_URL: redis.url }, {
    logger: { level: 'warn', stream: { write: (line: string) => { lines.push(JSON.parse(line)) } } }
  })
  const socket = new WebSocket(`${wsUrl}?token=${token('bd2')}`)
  t.teardown(() => socket.terminate())
  const frames: Array<{ type: string, id?: string, payload?: { code?: string, message?: string } }> = []
  const next = async (type: string) => await new Promise<(typeof frames)[number]>((resolve) => {
    const seen = frames.find((f) => f.type === type)
    if (seen !== undefined) return resolve(seen)
    socket.on('message', function on (data) {
      const frame = JSON.parse(String(data)) as (typeof frames)[number]
      if (frame.type !== type) return
      socket.off('message', on)
      resolve(frame)
    })
  })
  socket.on('message', (data) => frames.push(JSON.parse(String(data))))
  await next('system:connected')
  await redis.kill()
  socket.send(JSON.stringify({ type: 'subscribe', id: 's1', payload: { channels: ['room:bd2'] } }))
  const error = await next('error')
  t.match(error, { id: 's1', payload: { code: 'internal', message: /broker is unavailable/ } })
  // Twenty more: each answered, none a line of its own (one a few seconds at most, saying how many more).
  for (let i = 2; i <= 21; i++) socket.send(JSON.stringify({ type: 'subscribe', id: `s${i}`, payload: { channels: ['room:bd2'] } }))
  socket.send(JSON.stringify({ type: 'system:ping', id: 'p1' }))
  t.match(await next('system:pong'), { id: 'p1' }, 'the connection goes on')
  t.equal(frames.filter((f) => f.type === 'error' && f.payload?.code === 'internal').length, 21, 'every subscribe answered')
  const about = lines.filter((l) => l.msg.startsWith('frame handling failed'))
  t.equal(about.length, 1)
  t.equal(about[0].level, 40, 'a warning')
  t.equal(about[0].err, undefined, 'no stack')
  // The twenty held back are told when the interval (5 s) ends, not only with a next failure.
  await eventually('the held-back line', () => lines.some((l) => l.msg.includes('held back since the last line')), 15_000)
  const tail = lines.filter((l) => l.msg.startsWith('frame handling failed'))
  t.equal(tail.length, 2, 'one line more at the end of the interval')
  t.match(tail[1], { level: 40, heldBack: 20, msg: /held back since the last line/ })
})

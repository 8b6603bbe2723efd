import t from 'tap'
import WebSocket from 'ws'
import { requireService, startServer, token } from '../support/helper.js'
import { OwnRedis, redisAvailable } from '../support/redis-fixture.js'

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

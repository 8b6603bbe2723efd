import t from 'tap'
import WebSocket from 'ws'
import { requireService, startServer, token, WsClient } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// CONTRACT: a channel that no connection holds costs nothing once its subscribers are gone
// (docs/protocol.md, Limits). Presence keeps state per held channel; a connection that
// closes while its subscribe is still waiting for Redis must not leave that state behind.
const redisUp = await redisAvailable()

t.test('connections that close during their subscribe leave no presence state behind (Redis)', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('presence-released')
  await redisClient(t, prefix)
  const { app, wsUrl } = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, PRESENCE_INTERVAL_MS: 200 })
  for (let round = 0; round < 10; round++) {
    const ws = new WebSocket(`${wsUrl}?token=${token(`gone-${round}`)}`)
    ws.on('error', () => {})
    await new Promise((resolve) => ws.once('message', resolve)) // system:connected
    const channels = Array.from({ length: 100 }, (_, i) => `product:gone-${round}-${i}`)
    ws.send(JSON.stringify({ type: 'subscribe', id: 's', payload: { channels } }))
    // Gone before Redis has answered the subscribe.
    ws.terminate()
  }
  await eventually('the connections are gone', () => app.hub.connectionCount() === 0)
  await eventually('no presence state is left for channels nobody holds', () => app.hub.presenceChannelCount() === 0, 5000)
  t.equal(app.hub.presenceChannelCount(), 0)

  // Presence still works for who stays.
  const viewer = await WsClient.connect(t, wsUrl, token('stays'))
  await viewer.subscribe(['product:stays'])
  t.match(await viewer.nextPresence((f) => f.channel === 'product:stays'), { payload: { connections: 1, users: 1 } })
  t.equal(app.hub.presenceChannelCount(), 1, 'the held channel has its state')
})

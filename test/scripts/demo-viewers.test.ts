import { test } from 'tap'
import { ViewerCrowd } from '../../scripts/demo-viewers.js'
import { adminToken, sleep, startServer, token } from '../support/helper.js'

async function byTransport (url: string): Promise<{ ws: number, sse: number }> {
  const res = await fetch(`${url}/realtime/stats`, { headers: { authorization: `Bearer ${adminToken()}` } })
  const stats = await res.json() as { nodes: Array<{ connectionsByTransport?: { ws?: number, sse?: number } }> }
  return stats.nodes.reduce((sum, n) => ({ ws: sum.ws + (n.connectionsByTransport?.ws ?? 0), sse: sum.sse + (n.connectionsByTransport?.sse ?? 0) }), { ws: 0, sse: 0 })
}

test('the demo crowd opens real connections over both transports, comes and goes, and closes them all on stop', async (t) => {
  const { app, url } = await startServer(t)
  const crowd = new ViewerCrowd({ url, tokenFor: (userId) => token(userId), products: ['p-1', 'p-2'], min: 3, max: 8, sseShare: 0.5, speed: 20 })
  t.teardown(() => crowd.stop())
  crowd.start()

  const sizes = new Set<number>()
  let transports = { ws: 0, sse: 0 }
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline && (sizes.size < 3 || transports.ws === 0 || transports.sse === 0)) {
    await sleep(100)
    sizes.add(app.hub.connectionCount())
    transports = await byTransport(url)
  }
  t.ok(sizes.size >= 3, `the number of viewers moves: ${[...sizes].join(', ')}`)
  t.ok(transports.ws > 0 && transports.sse > 0, `over WebSocket and SSE: ${JSON.stringify(transports)}`)
  t.ok(crowd.size >= 3 && crowd.size <= 8, `within bounds: ${crowd.size}`)

  crowd.stop()
  const closing = Date.now() + 10_000
  while (app.hub.connectionCount() > 0 && Date.now() < closing) await sleep(50)
  t.equal(app.hub.connectionCount(), 0, 'every connection closed')
  t.equal(crowd.size, 0)
})

import { test } from 'tap'
import { publishAll } from '../../lib/ingress/publisher.js'
import { ShopSimulator } from '../../scripts/demo-shop.js'
import { adminToken, post, serviceToken, sleep, startServer, WsClient } from '../support/helper.js'

/** A seeded generator, so a run of the simulator is the same every time. */
function seeded (seed: number): () => number {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

test('the demo shop drives orders through their lifecycle, stock down to a low-stock alert, and stops when told', async (t) => {
  const { app, url, wsUrl } = await startServer(t)
  const admin = await WsClient.connect(t, wsUrl, adminToken('admin'))
  await admin.subscribe(['admin', 'orders', 'products'])

  const problems: string[] = []
  const shop = new ShopSimulator({
    async post (route, body) {
      const res = await post(`${url}${route}`, serviceToken(), body)
      if (res.status !== 202) throw new Error(`${route}: ${res.status}`)
    },
    async publish (drafts) { await publishAll(app.hub, drafts) },
    log: (line) => problems.push(line)
  }, { speed: 20, random: seeded(7), adminUserId: 'admin', shopperUserId: 'u-7' })
  t.teardown(() => shop.stop())
  shop.start()

  const seen = () => admin.frames.filter((f) => f.channel !== undefined)
  const deadline = Date.now() + 20_000
  const statusesOf = (orderId: string) => seen()
    .filter((f) => f.channel === 'orders' && f.payload.orderId === orderId)
    .map((f) => f.type === 'admin:order:updated' ? f.payload.status : f.type.split(':').pop())
  const shippedOrder = () => seen().find((f) => f.channel === 'orders' && f.payload.status === 'shipped')
  const alert = () => seen().find((f) => f.type === 'admin:alert')
  const shopperOrder = () => seen().find((f) => f.channel === 'orders' && f.payload.userId === 'u-7')
  while ((shippedOrder() === undefined || alert() === undefined || shopperOrder() === undefined) && Date.now() < deadline) await sleep(50)
  shop.stop()

  const shipped = shippedOrder()
  t.ok(shipped, 'an order reached shipped')
  if (shipped !== undefined) t.same(statusesOf(shipped.payload.orderId).slice(0, 3), ['created', 'paid', 'shipped'], 'in lifecycle order')
  t.match(alert()?.payload, { kind: 'low_stock', threshold: 5 }, 'stock fell to the low-stock threshold')
  t.ok(seen().some((f) => f.type === 'admin:inventory:updated' && f.payload.stock < f.payload.previousStock), 'stock falls as orders are placed')
  t.ok(shop.counts.orders > 0 && shop.counts.stockUpdates > 0)
  t.ok(shopperOrder(), 'the storefront\'s shopper places orders too')
  const states = seen().filter((f) => f.type === 'product:updated')
  t.same(new Set(states.map((f) => f.payload.productId)), new Set(ShopSimulator.productIds), 'every product\'s state is published at start')
  t.ok(states.every((f) => typeof f.payload.price === 'number' && typeof f.payload.stock === 'number'), 'a product update carries price and stock')
  t.ok(seen().filter((f) => f.type === 'admin:inventory:updated').every((f) => typeof f.payload.price === 'number'),
    'a stock update carries the price: any product event is the whole state (rewind: 1)')
  t.same(problems, [], 'every publish was accepted')

  // Let what was in flight land, then a marker: the socket delivers in order, so once the
  // marker is in, everything published before it is too.
  await shop.settled()
  await post(`${url}/realtime/publish`, serviceToken(), { channel: 'admin', type: 'test:marker', payload: {} })
  await admin.next((f) => f.type === 'test:marker')
  const settled = seen().length
  await sleep(500)
  t.equal(seen().length, settled, 'nothing is published after stop()')
})

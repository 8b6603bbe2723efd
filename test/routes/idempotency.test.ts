import { request } from 'node:http'
import t, { type Test } from 'tap'
import { requireService, serviceToken, startServer, token, WsClient } from '../support/helper.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'
import { broadcastEvents } from '../../lib/ingress/commerce-events.js'
import { fingerprintOf, scopeOf, withDedupe } from '../../lib/ingress/idempotency.js'
import { RedisLayout } from '../../lib/broker/redis-layout.js'

// Idempotent publishing (issue 15): Idempotency-Key per caller, across instances.
const redisUp = await redisAvailable()

async function send (url: string, route: string, body: unknown, key?: string, bearer = serviceToken()) {
  const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${bearer}` }
  if (key !== undefined) headers['idempotency-key'] = key
  const res = await fetch(`${url}${route}`, { method: 'POST', headers, body: JSON.stringify(body) })
  return { status: res.status, replayed: res.headers.get('idempotent-replayed'), body: await res.json() as any }
}

async function twoOnRedis (t: Test) {
  const prefix = uniquePrefix('idem')
  await redisClient(t, prefix)
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix }
  return [await startServer(t, settings), await startServer(t, settings)] as const
}

for (const backend of ['memory', 'redis'] as const) {
  t.test(`${backend}: a repeat publishes nothing and answers the first 202 body; another body with the key: 422`, async (t) => {
    if (backend === 'redis' && !requireService(t, 'Redis', redisUp)) return
    const [a, b] = backend === 'redis' ? await twoOnRedis(t) : [await startServer(t), undefined]
    const other = b ?? a
    const watcher = await WsClient.connect(t, other.wsUrl, token('w'))
    await watcher.subscribe(['product:i1', 'product:i2'])
    const body = { channels: ['product:i1', 'product:i2'], type: 'price', payload: { price: 10 } }
    const first = await send(a.url, '/realtime/broadcast', body, 'order-17-price')
    t.equal(first.status, 202)
    t.equal(first.replayed, null, 'the first is not a replay')
    const again = await send(other.url, '/realtime/broadcast', body, 'order-17-price')
    t.same([again.status, again.replayed], [202, 'true'], 'a repeat (on any instance): 202, Idempotent-Replayed: true')
    t.same(again.body, first.body, 'the first request\'s body')
    t.equal((await send(a.url, '/realtime/broadcast', { ...body, payload: { price: 11 } }, 'order-17-price')).status, 422, 'another body: 422')
    t.equal((await send(a.url, '/realtime/publish', { channel: 'product:i1', type: 'price', payload: { price: 10 } }, 'order-17-price')).status, 422,
      'another route with the key: 422')
    const otherCaller = await send(a.url, '/realtime/broadcast', body, 'order-17-price', token('svc-2', ['service']))
    t.same([otherCaller.status, otherCaller.replayed], [202, null], 'keys are per caller: another service\'s same key is its own')
    await send(a.url, '/realtime/publish', { channel: 'product:i1', type: 'marker', payload: {} })
    await watcher.next((f) => f.type === 'marker')
    t.same(watcher.events('product:i1').map((e) => [e.type, e.offset]), [['price', 1], ['price', 2]],
      'product:i1: the first publish and the other caller\'s, nothing from the repeat')
    t.same(watcher.events('product:i2').map((e) => e.offset), [1, 2])
  })

  t.test(`${backend}: racing requests with one new key publish once and answer alike`, async (t) => {
    if (backend === 'redis' && !requireService(t, 'Redis', redisUp)) return
    const [a, b] = backend === 'redis' ? await twoOnRedis(t) : [await startServer(t), undefined]
    const body = { userIds: ['r1', 'r2', 'r3'], type: 'notification', payload: { hello: 1 } }
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => send(i % 2 === 0 || b === undefined ? a.url : b.url, '/realtime/notify', body, 'race-key')))
    t.same(answers.map((r) => r.status), Array(8).fill(202))
    for (const r of answers) t.same(r.body, answers[0].body, 'the same receipt')
    for (const user of ['r1', 'r2', 'r3']) t.equal(answers[0].body.positions[`user:${user}`].offset, 1, `user:${user} got it once`)
  })
}

/** Where a channel stands, read over HTTP (how many events it got). */
async function offsetOf (url: string, channel: string): Promise<number> {
  const res = await fetch(`${url}/realtime/history/${encodeURIComponent(channel)}?limit=1`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  return ((await res.json()) as { position: { offset: number } }).position.offset
}

t.test('redis: every publishing route takes the key; a repeat on the other instance publishes nothing and is counted', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t)
  const routes: Array<[string, unknown]> = [
    ['/realtime/publish', { channel: 'room:every', type: 'said', payload: { n: 1 } }],
    ['/realtime/broadcast', { channels: ['product:e1', 'product:e2'], type: 'price', payload: { price: 1 } }],
    ['/realtime/notify', { userIds: ['e1', 'e2'], payload: { hello: 1 } }],
    ['/realtime/broadcast/order', { userId: 'e3', orderId: 'o-e', status: 'paid' }],
    ['/realtime/broadcast/inventory', { productId: 'e4', stock: 1, previousStock: 50 }],
    ['/realtime/test/notification', { userId: 'e5', message: 'hi' }]
  ]
  for (const [route, body] of routes) {
    const first = await send(a.url, route, body, `every:${route}`)
    t.same([first.status, first.replayed], [202, null], `${route}: published`)
    const again = await send(b.url, route, body, `every:${route}`)
    t.same([again.status, again.replayed], [202, 'true'], `${route}: the repeat on the other instance is a replay`)
    t.same(again.body, first.body, `${route}: the first receipt`)
    for (const [channel, position] of Object.entries(first.body.positions as Record<string, { offset: number }>)) {
      t.equal(await offsetOf(b.url, channel), position.offset, `${route}: ${channel} got nothing more`)
    }
  }
  const metrics = await (await fetch(`${b.url}/metrics`)).text()
  t.match(metrics, new RegExp(`^gateway_idempotent_replays_total\\{source="http"\\} ${routes.length}$`, 'm'), 'metric: one replay per route')
})

t.test('redis: a claim left without its events (a cluster gateway that died between its claim and its publish): the retry publishes, once', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('idem-left')
  const redis = await redisClient(t, prefix)
  const b = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix })
  const body = { channels: ['product:c1', 'product:c2'], type: 'price', payload: { price: 7 } }
  // On one Redis the claim is taken inside the publish call; on a cluster it is a call of
  // its own just before (its key has a slot of its own). What the dead gateway left:
  const scope = scopeOf('svc-1', 'crash-before')
  await redis.set(new RedisLayout(prefix).claimKey(scope), fingerprintOf('/realtime/broadcast', body), 'EX', 300)

  const retry = await send(b.url, '/realtime/broadcast', body, 'crash-before')
  t.same([retry.status, retry.replayed], [202, null], 'the retry publishes (nothing was)')
  t.same(retry.body.events.map((e: { offset: number }) => e.offset), [1, 1])
  const again = await send(b.url, '/realtime/broadcast', body, 'crash-before')
  t.same([again.status, again.replayed, again.body], [202, 'true', retry.body], 'and only once')
  t.equal(await offsetOf(b.url, 'product:c1'), 1)
  t.equal(await offsetOf(b.url, 'product:c2'), 1)
  t.equal((await send(b.url, '/realtime/broadcast', { ...body, type: 'other' }, 'crash-before')).status, 422, 'another body: 422')
})

t.test('redis: a request whose key is taken by another body publishes nothing, in the same step as the check', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t)
  const body = { channels: ['product:e1', 'product:e2'], type: 'price', payload: { price: 9 } }
  const racing = await Promise.all([
    send(a.url, '/realtime/broadcast', body, 'race-bodies'),
    send(b.url, '/realtime/broadcast', { ...body, payload: { price: 10 } }, 'race-bodies')
  ])
  t.same(racing.map((r) => r.status).sort(), [202, 422], 'one wins, the other is refused')
  t.equal(await offsetOf(a.url, 'product:e1'), 1, 'only the winner published')
  t.equal(await offsetOf(a.url, 'product:e2'), 1)
})

t.test('redis: a gateway that died after the publish script and before answering: the retry replays its events', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t)
  const body = { channels: ['product:d1', 'product:d2'], type: 'price', payload: { price: 8 } }
  const scope = scopeOf('svc-1', 'crash-after')
  // What the handler of a does (routes/publish.ts), then a dies before answering.
  const published = await a.app.hub.broker.publishBatch(withDedupe(broadcastEvents(body), scope), { scope, fingerprint: fingerprintOf('/realtime/broadcast', body) })
  await a.app.close()

  const retry = await send(b.url, '/realtime/broadcast', body, 'crash-after')
  t.same([retry.status, retry.replayed], [202, 'true'], 'nothing published again')
  t.same(retry.body.events, published.map((e) => ({ channel: e.channel, type: e.type, offset: e.offset, epoch: e.epoch })), 'the places the dead gateway got')
  t.equal(await offsetOf(b.url, 'product:d1'), 1)
  t.equal(await offsetOf(b.url, 'product:d2'), 1)
})

t.test('Idempotency-Key must be 1-255 printable ASCII characters: 400 naming it', async (t) => {
  const { url } = await startServer(t)
  const body = { channel: 'room:k', type: 't', payload: {} }
  for (const key of ['', 'x'.repeat(256)]) {
    const res = await send(url, '/realtime/publish', body, key)
    t.equal(res.status, 400, `${key.length} characters`)
    t.match(res.body.message, /idempotency-key/i)
  }
  const tab = await fetch(`${url}/realtime/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}`, 'idempotency-key': 'a\tb' },
    body: JSON.stringify(body)
  })
  t.equal(tab.status, 400, 'a control character')
  t.equal((await send(url, '/realtime/publish', body, 'x'.repeat(255))).status, 202, '255 characters are fine')

  // Two header lines: Node would join them into "k1, k2", itself a well-formed key.
  const twice = await new Promise<{ status: number, body: string }>((resolve, reject) => {
    const req = request(`${url}/realtime/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}`, 'idempotency-key': ['k1', 'k2'] }
    }, (res) => {
      let text = ''
      res.on('data', (chunk) => { text += String(chunk) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
  t.equal(twice.status, 400, 'the key given twice')
  t.match(JSON.parse(twice.body), { statusCode: 400, message: /^Idempotency-Key: given more than once/ })
  t.equal((await send(url, '/realtime/publish', body, 'k1, k2')).status, 202, 'one line with a comma is one key')
})

t.test('with Idempotency-Key, a field no event carries nested thousands deep is a 400, not a 500 (found by the property test)', async (t) => {
  const { url } = await startServer(t)
  const deep = '['.repeat(20_000) + ']'.repeat(20_000)
  const post = (key: string | undefined, extra: string) => fetch(`${url}/realtime/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}`, ...(key === undefined ? {} : { 'idempotency-key': key }) },
    body: `{"channel":"room:deep","type":"t","payload":{},"extra":${extra}}`
  })
  const refused = await post('deep-1', deep)
  t.equal(refused.status, 400)
  t.match(await refused.json(), { statusCode: 400, message: /^extra: nested deeper than 65 levels/ })
  t.equal((await post(undefined, deep)).status, 202, 'without a key the body is not fingerprinted, and the field is not published')
  const shallow = '['.repeat(60) + ']'.repeat(60)
  t.equal((await post('deep-2', shallow)).status, 202, 'nesting within the limit is fingerprinted as before')
})

for (const backend of ['memory', 'redis'] as const) {
  t.test(`${backend}: a key lasts IDEMPOTENCY_TTL_SECONDS, then the same request publishes again`, async (t) => {
    if (backend === 'redis' && !requireService(t, 'Redis', redisUp)) return
    const settings: Record<string, string | number> = { IDEMPOTENCY_TTL_SECONDS: 1 }
    if (backend === 'redis') {
      const prefix = uniquePrefix('idem-ttl')
      await redisClient(t, prefix)
      Object.assign(settings, { REDIS_URL, REDIS_KEY_PREFIX: prefix })
    }
    const { url } = await startServer(t, settings)
    const body = { channel: 'room:ttl', type: 't', payload: { n: 1 } }
    const first = await send(url, '/realtime/publish', body, 'short-lived')
    const repeat = await send(url, '/realtime/publish', body, 'short-lived')
    t.same([first.status, repeat.replayed, repeat.body], [202, 'true', first.body], 'within the TTL: a repeat')
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const later = await send(url, '/realtime/publish', body, 'short-lived')
    t.same([later.status, later.replayed, later.body.events[0].offset], [202, null, 2], 'after it: published again')
    const other = await send(url, '/realtime/publish', { ...body, payload: { n: 2 } }, 'short-lived')
    t.equal(other.status, 422, 'and the key is claimed anew by that request: another body is refused again')
  })
}

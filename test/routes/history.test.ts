import t, { type Test } from 'tap'
import { adminToken, post, requireService, serviceToken, SseClient, startServer, token, WsClient } from '../support/helper.js'
import { RedisLayout } from '../../lib/broker/redis-layout.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// Live state and history (issue 17): rewind on subscribe (WS and SSE), GET /realtime/history,
// HISTORY_POLICY; on two instances sharing a real Redis, and on the embedded broker.
const redisUp = await redisAvailable()

async function twoOnRedis (t: Test, overrides: Record<string, string | number> = {}) {
  const prefix = uniquePrefix('history')
  await redisClient(t, prefix)
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix, ...overrides }
  return [await startServer(t, settings), await startServer(t, settings)] as const
}

const publish = (url: string, channel: string, payload: Record<string, unknown>) =>
  post(`${url}/realtime/publish`, serviceToken(), { channel, type: 'product:updated', payload })

const history = async (url: string, path: string, bearer?: string) => {
  const res = await fetch(`${url}/realtime/history/${path}`, { headers: bearer === undefined ? {} : { authorization: `Bearer ${bearer}` } })
  return { status: res.status, body: await res.json() as any }
}

t.test('rewind 1 on subscribe is the current state, then live, with no gap or duplicate (two instances on Redis)', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t)
  for (let n = 1; n <= 5; n++) await publish(a.url, 'product:42', { price: n })
  const shopper = await WsClient.connect(t, b.wsUrl, token('shopper'))
  const ack = await shopper.request({ type: 'subscribe', payload: { channels: ['product:42', 'product:none'], rewind: 1 } })
  t.match(ack, { type: 'subscribed', payload: { channels: ['product:42', 'product:none'], positions: { 'product:42': { offset: 5 }, 'product:none': { offset: 0 } } } })
  t.same(ack.payload.recovered, {}, 'recovered is only for since')
  t.match(await shopper.next((f) => f.channel === 'product:42'), { offset: 5, payload: { price: 5 } }, 'the latest state first')
  await publish(a.url, 'product:42', { price: 6 })
  t.match(await shopper.next((f) => f.channel === 'product:42'), { offset: 6, payload: { price: 6 } }, 'then live')
  await publish(a.url, 'product:none', { price: 1 })
  t.match(await shopper.next((f) => f.channel === 'product:none'), { offset: 1 }, 'an empty channel rewinds nothing and goes live')
  t.same(shopper.events(), [], 'nothing doubled')

  const more = await WsClient.connect(t, a.wsUrl, token('more'))
  await more.request({ type: 'subscribe', payload: { channels: ['product:42'], rewind: 3 } })
  for (const offset of [4, 5, 6]) t.match(await more.next((f) => f.channel === 'product:42'), { offset }, `rewind 3: ${offset}`)
  t.same(more.events(), [])
})

t.test('rewind: bad values are bad_request; since wins over rewind', async (t) => {
  const { url, wsUrl } = await startServer(t, { HISTORY_SIZE: 10 })
  const client = await WsClient.connect(t, wsUrl, token('r'))
  for (const rewind of [0, 11, 1.5, '2', -1]) {
    const reply = await client.request({ type: 'subscribe', payload: { channels: ['product:1'], rewind } })
    t.match(reply, { type: 'error', payload: { code: 'bad_request', message: /rewind/ } }, `rewind ${JSON.stringify(rewind)}`)
  }
  for (let n = 1; n <= 4; n++) await publish(url, 'product:1', { n })
  const ack = await client.request({ type: 'subscribe', payload: { channels: ['product:1'], rewind: 3, since: { 'product:1': { offset: 3 } } } })
  t.same(ack.payload.recovered, { 'product:1': true })
  t.match(await client.next((f) => f.channel === 'product:1'), { offset: 4 }, 'only what since asks')
  t.same(client.events(), [])
})

t.test('rewind beside the payload is read too; given twice with two values it is bad_request', async (t) => {
  const { url, wsUrl } = await startServer(t, { HISTORY_SIZE: 10 })
  for (let n = 1; n <= 4; n++) await publish(url, 'product:2', { n })
  const client = await WsClient.connect(t, wsUrl, token('beside'))
  const ack = await client.request({ type: 'subscribe', rewind: 2, payload: { channels: ['product:2'] } })
  t.match(ack, { type: 'subscribed', payload: { positions: { 'product:2': { offset: 4 } } } })
  for (const offset of [3, 4]) t.match(await client.next((f) => f.channel === 'product:2'), { offset }, `rewind 2 beside the payload: ${offset}`)
  for (const rewind of [0, 11, '2']) {
    const reply = await client.request({ type: 'subscribe', rewind, payload: { channels: ['product:3'] } })
    t.match(reply, { type: 'error', payload: { code: 'bad_request', message: /rewind/ } }, `rewind ${JSON.stringify(rewind)} beside the payload`)
  }
  const twice = await client.request({ type: 'subscribe', rewind: 1, payload: { channels: ['product:3'], rewind: 2 } })
  t.match(twice, { type: 'error', payload: { code: 'bad_request', message: /rewind is given twice/ } })
  const same = await client.request({ type: 'subscribe', rewind: 1, payload: { channels: ['product:2', 'product:4'], rewind: 1 } })
  t.equal(same.type, 'subscribed', 'the same value twice is one rewind')
  t.same(client.events(), [], 'product:2 was held already: not rewound again; product:4 has no event')
})

t.test('SSE ?rewind=n: the last events of every channel, ignored when resuming', async (t) => {
  const { url } = await startServer(t)
  for (let n = 1; n <= 3; n++) await publish(url, 'product:9', { n })
  await post(`${url}/realtime/notify`, serviceToken(), { userId: 'sse-user', payload: { hello: true } })
  const stream = await SseClient.open(t, `${url}/sse?channels=product:9&rewind=2&token=${token('sse-user')}`)
  const events = await stream.waitFor(3, (e) => e.event !== 'system:connected')
  const of = (channel: string) => events.filter((e) => e.data.channel === channel).map((e) => e.data.offset)
  t.same(of('product:9'), [2, 3], 'the last 2 of product:9, in order')
  t.same(of('user:sse-user'), [1], 'and of the user\'s own channel')
  const last = events.at(-1)?.id as string
  stream.close()
  await publish(url, 'product:9', { n: 4 })
  const resumed = await SseClient.open(t, `${url}/sse?channels=product:9&rewind=3&token=${token('sse-user')}`, { 'last-event-id': last })
  const next = await resumed.waitFor(1, (e) => e.data?.channel === 'product:9')
  t.same(next.map((e) => e.data.offset), [4], 'resumed from Last-Event-ID: rewind ignored')
  for (const rewind of ['0', '101', '1.5', '-1', 'x']) {
    const bad = await SseClient.open(t, `${url}/sse?channels=product:9&rewind=${rewind}&token=${token('sse-user')}`)
    t.equal(bad.status, 400, `rewind=${rewind}: 400 (HISTORY_SIZE is 100)`)
  }
})

t.test('GET /realtime/history: since, epoch, limit; ACL; bad input', async (t) => {
  const { url } = await startServer(t, { HISTORY_SIZE: 5 })
  const empty = await history(url, 'product:7', token('u'))
  t.match(empty, { status: 200, body: { channel: 'product:7', events: [], position: { offset: 0 }, recovered: true } })
  const published = []
  for (let n = 1; n <= 7; n++) published.push((await publish(url, 'product:7', { n })).body.positions['product:7'])
  const epoch = published[0].epoch
  const all = await history(url, 'product:7', token('u'))
  t.same(all.body.events.map((e: any) => e.offset), [3, 4, 5, 6, 7], 'without since: the last HISTORY_SIZE, oldest first')
  t.match(all.body.events[0], { type: 'product:updated', channel: 'product:7', offset: 3, payload: { n: 3 } })
  t.same(all.body.position, { offset: 7, epoch })
  t.same((await history(url, 'product:7?limit=2', token('u'))).body.events.map((e: any) => e.offset), [6, 7])
  const since = await history(url, `product:7?since=4&epoch=${epoch}`, token('u'))
  t.same([since.body.events.map((e: any) => e.offset), since.body.recovered], [[5, 6, 7], true], 'since: as a resume would send')
  t.same((await history(url, 'product:7?since=4&limit=2', token('u'))).body.events.map((e: any) => e.offset), [5, 6], 'limit pages from since')
  t.match(await history(url, 'product:7?since=1', token('u')), { status: 200, body: { events: [], recovered: false } }, 'trimmed: recovered false')
  t.match(await history(url, 'product:7?since=4&epoch=other', token('u')), { body: { events: [], recovered: false } }, 'another epoch')
  await post(`${url}/realtime/notify`, serviceToken(), { userId: 'u', payload: { inbox: 1 } })
  t.match(await history(url, 'user:u', token('u')), { status: 200, body: { events: [{ payload: { inbox: 1 } }] } }, 'my own inbox')
  t.equal((await history(url, 'user:u', token('other'))).status, 403, 'not another user\'s')
  t.equal((await history(url, 'admin', token('u'))).status, 403)
  t.equal((await history(url, 'admin', adminToken())).status, 200)
  t.equal((await history(url, 'user:u', serviceToken())).status, 200, 'a service may read any channel')
  t.equal((await history(url, 'user:u', adminToken())).status, 403, 'an admin may not read a user\'s channel: it may not subscribe to it')
  t.equal((await history(url, 'foo:1', adminToken())).status, 403, 'nor a channel no one may subscribe to')
  t.equal((await history(url, 'foo:1', serviceToken())).status, 200, 'which a service may read')
  t.equal((await history(url, 'product:7')).status, 401, 'a token is needed unless anonymous is allowed')
  for (const path of ['product:7?limit=0', 'product:7?limit=6', 'product:7?since=x', 'product:7?limit=-1', 'bad%20channel']) {
    const res = await history(url, path, token('u'))
    t.equal(res.status, 400, path)
    t.match(res.body, { statusCode: 400, error: 'Bad Request' })
  }
})

t.test('a channel name of up to 200 characters is read by the history and presence routes; a longer one is a 400', async (t) => {
  const { url } = await startServer(t)
  const long = `product:${'a'.repeat(192)}`
  t.equal(long.length, 200)
  await publish(url, long, { n: 1 })
  t.match(await history(url, long, token('u')), { status: 200, body: { channel: long, events: [{ offset: 1 }] } }, 'history')
  t.match(await history(url, encodeURIComponent(long).replaceAll('a', '%61'), token('u')), { status: 200, body: { channel: long } }, 'every character percent-encoded')
  const presence = await fetch(`${url}/realtime/presence/${long}`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.match({ status: presence.status, body: await presence.json() }, { status: 200, body: { channel: long, connections: 0 } }, 'presence')
  for (const name of [`${long}a`, `product:${'a'.repeat(2000)}`]) {
    const res = await history(url, name, token('u'))
    t.match(res, { status: 400, body: { statusCode: 400, error: 'Bad Request' } }, `${name.length} characters`)
    t.notMatch(JSON.stringify(res.body), 'aaaa', 'the URL is not echoed')
  }
})

t.test('HISTORY_POLICY: a shopper back hours later gets what was sent while away; product channels keep their latest', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t, { HISTORY_SIZE: 3, HISTORY_POLICY: 'user:=1000/86400,product:=1/86400' })
  const shopper = await WsClient.connect(t, b.wsUrl, token('away'))
  const seen = shopper.greeting.payload
  t.same(seen.channels, ['user:away'])
  shopper.close()
  await shopper.closed
  for (let n = 1; n <= 50; n++) await post(`${a.url}/realtime/notify`, serviceToken(), { userId: 'away', payload: { n } })
  for (let n = 1; n <= 3; n++) await publish(a.url, 'product:5', { stock: n })
  const back = await WsClient.connect(t, b.wsUrl, token('away'))
  const ack = await back.subscribe(['user:away'], { 'user:away': { offset: 0 } })
  t.same(ack.payload.recovered, { 'user:away': true }, 'all 50 are still held (size 1000)')
  for (let n = 1; n <= 50; n++) t.match(await back.next((f) => f.channel === 'user:away'), { offset: n, payload: { n } })
  const inbox = await history(a.url, 'user:away?limit=1000', token('away'))
  t.equal(inbox.body.events.length, 50)
  t.equal((await history(a.url, 'user:away?limit=1001', token('away'))).status, 400, 'limit goes up to the channel\'s own size')
  const product = await history(b.url, 'product:5', token('away'))
  t.same(product.body.events.map((e: any) => e.payload.stock), [3], 'product: keeps only its latest state')
  const rewound = await back.request({ type: 'subscribe', payload: { channels: ['product:5'], rewind: 1000 } })
  t.equal(rewound.type, 'subscribed', 'rewind up to the largest size configured')
  t.match(await back.next((f) => f.channel === 'product:5'), { offset: 3, payload: { stock: 3 } })
})

t.test('SSE on two instances on Redis: ?rewind=1 is the current state; back later, Last-Event-ID brings what was sent while away (user:=1000/86400)', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const [a, b] = await twoOnRedis(t, { HISTORY_SIZE: 3, HISTORY_POLICY: 'user:=1000/86400,product:=1/86400' })
  for (let n = 1; n <= 3; n++) await publish(a.url, 'product:6', { stock: n })
  const first = await SseClient.open(t, `${b.url}/sse?channels=product:6&rewind=1&token=${token('away-sse')}`)
  const [state] = await first.waitFor(1, (e) => e.data?.channel === 'product:6')
  t.match(state, { event: 'product:updated', data: { offset: 3, payload: { stock: 3 } } }, 'the latest state (product: keeps 1)')
  const lastId = state.id as string
  first.close()
  for (let n = 1; n <= 30; n++) await post(`${a.url}/realtime/notify`, serviceToken(), { userId: 'away-sse', payload: { n } })
  await publish(a.url, 'product:6', { stock: 4 })
  const back = await SseClient.open(t, `${b.url}/sse?channels=product:6&rewind=1&token=${token('away-sse')}`, { 'last-event-id': lastId })
  const missed = await back.waitFor(31, (e) => e.data?.channel !== undefined && e.event !== 'system:connected')
  t.same(missed.filter((e) => e.data.channel === 'user:away-sse').map((e) => e.data.payload.n), Array.from({ length: 30 }, (_, i) => i + 1),
    'every notification sent while away, in order, once (30 > HISTORY_SIZE 3: the user: entry keeps them)')
  t.same(missed.filter((e) => e.data.channel === 'product:6').map((e) => e.data.offset), [4], 'the product from where it was: rewind ignored')
  t.notOk(back.events.some((e) => e.event === 'system:recovery'), 'nothing lost: no recovery notice')
})

t.test('a stream restart under live subscribers on two instances: system:reset before the next event, WS and SSE', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('history-reset')
  const redis = await redisClient(t, prefix)
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix }
  const [a, b] = [await startServer(t, settings), await startServer(t, settings)]
  const ws = await WsClient.connect(t, b.wsUrl, token('reset-ws'))
  await ws.subscribe(['product:rs'])
  const sse = await SseClient.open(t, `${b.url}/sse?channels=product:rs&token=${token('reset-sse')}`)
  await sse.waitFor(1, (e) => e.event === 'system:connected')
  for (let n = 1; n <= 2; n++) await publish(a.url, 'product:rs', { n })
  t.match(await ws.next((f) => f.channel === 'product:rs'), { offset: 1 })
  const before = await ws.next((f) => f.channel === 'product:rs')
  t.match(before, { offset: 2 })
  await sse.waitFor(2, (e) => e.data?.channel === 'product:rs')
  // What a promoted replica or a Redis restarted empty looks like to the scripts: another run.
  await redis.hset(new RedisLayout(prefix).baseKey, 'runid', 'another-run')
  const fresh = (await publish(a.url, 'product:rs', { n: 3 })).body.positions['product:rs']
  t.equal(fresh.offset, 1, 'the stream restarted...')
  t.not(fresh.epoch, before.epoch, '...in a new epoch')
  t.match(await ws.next((f) => f.channel === 'product:rs'), { type: 'system:reset', payload: { position: { offset: 0, epoch: fresh.epoch } } }, 'WS: the reset first')
  t.match(await ws.next((f) => f.channel === 'product:rs'), { offset: 1, payload: { n: 3 } }, 'then the event')
  const after = await sse.waitFor(4, (e) => e.data?.channel === 'product:rs')
  t.same(after.slice(2).map((e) => [e.event, e.data.offset ?? e.data.payload.position.offset]), [['system:reset', 0], ['product:updated', 1]], 'SSE: the reset first, then the event')
  t.match(after[2].data, { channel: 'product:rs', payload: { position: { offset: 0, epoch: fresh.epoch } } })
  t.same(ws.events(), [], 'nothing else')
})

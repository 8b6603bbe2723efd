import t from 'tap'
import { post, requireService, serviceToken, SseClient, startServer, token, WsClient } from '../support/helper.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// One user's reads of history from Redis are budgeted (lib/transport/history-read-budget.ts):
// past it, a rewind or resume is refused (SSE system:unavailable, WebSocket rate_limited, the history route
// 429), never the other users' and never the publishes.
const redisUp = await redisAvailable()

t.test('past its budget of history read from Redis, a user is refused a rewind on every path; others are not', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('read-budget')
  await redisClient(t, prefix)
  // No copy in memory: every rewind reads Redis. 40 events of ~50 KB: ~2 MB a read.
  const { url, wsUrl } = await startServer(t, {
    REDIS_URL, REDIS_KEY_PREFIX: prefix, HISTORY_CACHE_BYTES: 0, HISTORY_READ_BYTES_PER_SECOND: 1000, HISTORY_READ_BYTES_BURST: 3_000_000
  })
  const big = 'x'.repeat(50_000)
  for (let i = 0; i < 40; i++) t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:big', type: 'stock', payload: { i, big } })).status, 202)

  const rewind = (sub: string) => SseClient.open(t, `${url}/sse?channels=product:big&rewind=40`, { authorization: `Bearer ${token(sub)}` })
  t.equal((await rewind('reader')).status, 200, 'a first rewind: ~2 MB of the 3 MB')
  t.equal((await rewind('reader')).status, 200, 'a second, while some budget is left: it goes past zero')
  const refused = await rewind('reader')
  // Told to come back, not a 503: EventSource gives up for good on a 503 (review, session 27).
  t.equal(refused.status, 200, 'a third: refused with a stream that says come back')
  const [unavailable] = await refused.waitFor(1, (e) => e.event === 'system:unavailable')
  t.match(unavailable.data, { status: 503, reason: /too much history read for this user/, retryMs: Number })
  t.notOk(refused.events.some((e) => e.event === 'stock'), 'with none of the history')

  const ws = await WsClient.connect(t, wsUrl, token('reader'))
  const answer = await ws.request({ type: 'subscribe', id: 'r', payload: { channels: ['product:big'], rewind: 40 } })
  t.match(answer, { type: 'error', id: 'r', payload: { code: 'rate_limited' } }, 'a WebSocket rewind of the same user: rate_limited')
  t.match(await ws.request({ type: 'subscribe', id: 'p', payload: { channels: ['product:big'] } }), { type: 'subscribed' }, 'a plain subscribe reads no history: still fine')

  const history = await fetch(`${url}/realtime/history/product:big`, { headers: { authorization: `Bearer ${token('reader')}` } })
  t.equal(history.status, 429, 'the history route: 429')
  t.equal(history.headers.get('retry-after'), '1')

  t.equal((await rewind('someone-else')).status, 200, 'another user has a budget of its own')
  const service = await fetch(`${url}/realtime/history/product:big`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.equal(service.status, 200, 'a service reading history is not budgeted')
  t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:big', type: 'stock', payload: { i: 40 } })).status, 202, 'publishing goes on')
})

t.test('the history route charges a user what its answers weigh, whatever the broker: answered from memory too', async (t) => {
  const { url } = await startServer(t, { HISTORY_READ_BYTES_PER_SECOND: 1000, HISTORY_READ_BYTES_BURST: 3_000_000 })
  const big = 'x'.repeat(50_000)
  for (let i = 0; i < 40; i++) t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:big', type: 'stock', payload: { i, big } })).status, 202)
  const read = async (bearer: string) => {
    const res = await fetch(`${url}/realtime/history/product:big`, { headers: { authorization: `Bearer ${bearer}` } })
    const body = await res.json() as { events?: unknown[] }
    return { status: res.status, events: body.events?.length, retryAfter: res.headers.get('retry-after') }
  }
  t.same(await read(token('reader')), { status: 200, events: 40, retryAfter: null }, 'a first answer, ~2 MB of the 3 MB')
  t.same(await read(token('reader')), { status: 200, events: 40, retryAfter: null }, 'a second, past zero')
  t.same(await read(token('reader')), { status: 429, events: undefined, retryAfter: '1' }, 'a third: 429')
  t.equal((await read(token('another'))).status, 200, 'another user has its own')
  t.equal((await read(serviceToken())).status, 200, 'a service is not budgeted')
})

t.test('past the instance\'s budget of history read from Redis, every user is refused a rewind, each within its own; publishes go on', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('read-budget-instance')
  await redisClient(t, prefix)
  // Each user may read 3 MB at once; the instance 3 MB over every user. ~2 MB a read.
  const { url, wsUrl } = await startServer(t, {
    REDIS_URL,
    REDIS_KEY_PREFIX: prefix,
    HISTORY_CACHE_BYTES: 0,
    HISTORY_READ_BYTES_PER_SECOND: 1000,
    HISTORY_READ_BYTES_BURST: 3_000_000,
    INSTANCE_HISTORY_READ_BYTES_PER_SECOND: 1000,
    INSTANCE_HISTORY_READ_BYTES_BURST: 3_000_000
  })
  const big = 'x'.repeat(50_000)
  for (let i = 0; i < 40; i++) t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:big', type: 'stock', payload: { i, big } })).status, 202)

  const rewind = (sub: string) => SseClient.open(t, `${url}/sse?channels=product:big&rewind=40`, { authorization: `Bearer ${token(sub)}` })
  for (const sub of ['first', 'second']) {
    const stream = await rewind(sub)
    await stream.waitFor(40, (e) => e.event === 'stock')
    t.pass(`${sub}: its rewind of ~2 MB (the instance's budget goes past zero with the second)`)
  }
  const refused = await rewind('third')
  const [unavailable] = await refused.waitFor(1, (e) => e.event === 'system:unavailable')
  t.match(unavailable.data, { status: 503, reason: /this instance is reading too much history/, retryMs: Number }, 'a third user, its own budget whole: the instance\'s is spent')

  const ws = await WsClient.connect(t, wsUrl, token('fourth'))
  t.match(await ws.request({ type: 'subscribe', id: 'r', payload: { channels: ['product:big'], rewind: 40 } }),
    { type: 'error', id: 'r', payload: { code: 'rate_limited', message: /this instance is reading too much history/ } }, 'a WebSocket rewind: rate_limited')
  const history = await fetch(`${url}/realtime/history/product:big`, { headers: { authorization: `Bearer ${token('fifth')}` } })
  t.equal(history.status, 429, 'the history route: 429')
  t.match(await history.json(), { message: /this instance is reading too much history/ })
  t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:big', type: 'stock', payload: { i: 40 } })).status, 202, 'publishing goes on')
})

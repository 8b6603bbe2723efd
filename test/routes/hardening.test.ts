import { once } from 'node:events'
import { connect } from 'node:net'
import { Writable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import WebSocket from 'ws'
import { buildApp } from '../../app.js'
import { mintToken } from '../../lib/auth/token.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { loggerOptions } from '../../lib/ops/logging.js'
import { RedisLayout } from '../../lib/broker/redis-layout.js'
import {
  adminToken, post, requireService, serviceToken, SseClient, startServer, TEST_SECRET, testConfig, token, WsClient
} from '../support/helper.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// One test per way a signed-in (or anonymous) client could hurt the server, found by a
// security review (issue 13); each failed before its fix.

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const redisUp = await redisAvailable()
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Per-connection and per-user rate limits far above what the churn tests below send. */
const NO_CHURN_LIMITS = {
  WS_RATE_LIMIT_PER_SECOND: 100_000,
  WS_RATE_LIMIT_BURST: 100_000,
  WS_SUBSCRIBES_PER_SECOND: 10_000_000,
  WS_SUBSCRIBES_BURST: 10_000_000,
  NEW_CHANNELS_PER_SECOND: 10_000_000,
  NEW_CHANNELS_BURST: 10_000_000,
  WS_INBOUND_BYTES_PER_SECOND: 1024 ** 3,
  WS_INBOUND_BYTES_BURST: 1024 ** 3
}

/** Subscribes to `names` fresh room channels and leaves them again, 127 per frame. */
async function churn (client: WsClient, rounds: number, tag: string): Promise<number> {
  let names = 0
  for (let round = 0; round < rounds; round++) {
    const channels = Array.from({ length: 127 }, (_, i) => `room:${tag}-${round}-${i}`)
    const id = `s${round}`
    client.send({ type: 'subscribe', id, payload: { channels } })
    await client.next((f) => f.id === id, 10_000)
    client.send({ type: 'unsubscribe', id: `u${round}`, payload: { channels } })
    await client.next((f) => f.id === `u${round}`, 10_000)
    client.presence.length = 0 // the test's own client would keep them (room: channels have presence)
    names += channels.length
  }
  return names
}

/**
 * The server's heap after a full GC, as its /metrics reports it (`nodejs_heap_size_used_bytes`;
 * the server runs in this process, so the test can collect first): the least of three scrapes,
 * so the scrape's own allocations do not count.
 */
async function heapAfterGc (url: string): Promise<number> {
  let least = Infinity
  for (let i = 0; i < 3; i++) {
    gc(); gc()
    const metrics = await (await fetch(`${url}/metrics`)).text()
    const used = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(metrics)
    if (used === null) throw new Error('no nodejs_heap_size_used_bytes in /metrics')
    least = Math.min(least, Number(used[1]))
  }
  return least
}

/** Least-squares slope of y over x. */
function slope (points: Array<[number, number]>): number {
  const n = points.length
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0)
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0)
  return sxy / sxx
}

/** How long the memory test churns fresh names (the issue asks for tens of seconds). */
const CHURN_MS = 20_000

t.test('subscribing to fresh channels and leaving them costs nothing afterwards (memory broker)', async (t) => {
  // room: channels keep presence counts: their state goes at the next presence tick.
  // Limits out of the way: this measures memory. (The inbound byte budget, 1 MiB/s, refused
  // frames once a fast machine churned past it; a refused frame this large is answered
  // without its id, and the test waited for that id.)
  const { app, url, wsUrl } = await startServer(t, { ...NO_CHURN_LIMITS, PRESENCE_INTERVAL_MS: 100 })
  const broker = app.hub.broker as MemoryBroker
  const client = await WsClient.connect(t, wsUrl, token('churner'))
  await churn(client, 20, 'warm') // warm the code paths before measuring
  const samples: Array<[number, number]> = [[0, await heapAfterGc(url)]]
  let names = 0
  const started = Date.now()
  for (let phase = 0; Date.now() - started < CHURN_MS || phase < 6; phase++) {
    names += await churn(client, 150, `fresh-${phase}`)
    samples.push([names, await heapAfterGc(url)])
  }
  t.comment(`heap after GC (MB) by names churned: ${samples.map(([n, h]) => `${n}:${(h / 2 ** 20).toFixed(1)}`).join(' ')}`)
  t.equal(broker.streamCount, 1, `no stream left behind by ${names} channels subscribed and left (only user:churner's)`)
  t.equal(app.hub.stats().channels, 1, 'the hub holds only the user\'s own channel')
  // Before the fix every name left a stream behind for HISTORY_TTL_SECONDS: ~200 B each, so
  // the heap grew with the names. The slope over the second half of the run leaves out the
  // collector's and the compiler's one-time growth early on.
  const perName = slope(samples.slice(Math.floor(samples.length / 2)))
  t.ok(perName < 20, `heap grows ${perName.toFixed(2)} B per name over the second half of ${names} names`)
  const overall = (samples[samples.length - 1][1] - samples[0][1]) / names
  t.ok(overall < 20, `heap grew ${overall.toFixed(2)} B per name over the whole run`)
  t.match(await client.request({ type: 'system:ping' }), { type: 'system:pong' })
})

t.test('subscribing to fresh channels and leaving them leaves no key in Redis', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('churn')
  const redis = await redisClient(t, prefix)
  const { wsUrl } = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, ...NO_CHURN_LIMITS, PRESENCE_INTERVAL_MS: 100 })
  const client = await WsClient.connect(t, wsUrl, token('churner'))
  const names = await churn(client, 40, 'redis')
  await sleep(500) // presence shares are withdrawn at the next tick
  const layout = new RedisLayout(prefix)
  const global = new Set([layout.baseKey, layout.nodesKey])
  const keys = (await redis.keys(`${prefix}*`)).filter((k) => !k.startsWith(`${prefix}node`) && !global.has(k))
  t.same(keys, [], `no channel key for ${names} channels subscribed and left`)
})

t.test('a resume from a channel that had no events yet still recovers once it has some', async (t) => {
  // The position of an empty channel is not stored, yet stays valid for its first publish.
  const { url, wsUrl } = await startServer(t)
  const first = await WsClient.connect(t, wsUrl, token('7'))
  const { payload } = await first.subscribe(['product:empty-1'])
  const position = payload.positions['product:empty-1']
  t.equal(position.offset, 0)
  first.close()
  await first.closed
  for (let n = 1; n <= 3; n++) {
    t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'product:empty-1', type: 't', payload: { n } })).status, 202)
  }
  const again = await WsClient.connect(t, wsUrl, token('7'))
  const ack = await again.subscribe(['product:empty-1'], { 'product:empty-1': position })
  t.same(ack.payload.recovered, { 'product:empty-1': true })
  for (let n = 1; n <= 3; n++) t.match(await again.next((f) => f.channel === 'product:empty-1'), { offset: n, payload: { n } })
})

/** JSON of a payload nested `depth` levels deep (the object itself is level 1), built as text. */
const nestedJson = (depth: number): string => '{"a":'.repeat(depth - 1) + '{"leaf":true}' + '}'.repeat(depth - 1)

async function postJson (url: string, bearer: string, json: string): Promise<{ status: number, body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` }, body: json })
  return { status: res.status, body: await res.json() }
}

t.test('a payload nested too deep is a 400 naming the field, and harms no channel', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const client = await WsClient.connect(t, wsUrl, token('5'))
  await client.subscribe(['product:deep'])
  const publish = (payloadJson: string) =>
    postJson(`${url}/realtime/publish`, serviceToken(), `{"channel":"product:deep","type":"t","payload":${payloadJson}}`)
  const hostile = await publish(nestedJson(5000))
  t.equal(hostile.status, 400)
  t.match(hostile.body, { statusCode: 400, error: 'Bad Request', message: /^payload\.a: nested deeper than 64 levels/ })
  t.equal((await publish(nestedJson(65))).status, 400, '65 levels: refused')
  t.equal((await publish(nestedJson(64))).status, 202, '64 levels: accepted')
  t.match(await client.next((f) => f.channel === 'product:deep'), { offset: 1 }, 'only the accepted one has an offset')
  const order = await postJson(`${url}/realtime/broadcast/order`, serviceToken(), `{"userId":"5","orderId":"o","status":"paid","extra":${nestedJson(100)}}`)
  t.match(order, { status: 400, body: { message: /^extra: nested deeper/ } }, 'a body whose own fields are the payload names its field')
  // A resuming client still gets the channel, live events too.
  const again = await WsClient.connect(t, wsUrl, token('6'))
  const ack = await again.subscribe(['product:deep'], { 'product:deep': { offset: 0 } })
  t.same(ack.payload.recovered, { 'product:deep': true })
  t.match(await again.next((f) => f.channel === 'product:deep'), { offset: 1 })
  t.equal((await publish('{"n":2}')).status, 202)
  t.match(await again.next((f) => f.channel === 'product:deep'), { offset: 2 })
})

t.test('payload and publish size limits: 413 (EVENT_MAX_BYTES, PUBLISH_MAX_BYTES)', async (t) => {
  const { url } = await startServer(t, { EVENT_MAX_BYTES: 1024, PUBLISH_MAX_BYTES: 4096, BODY_LIMIT_BYTES: 1024 * 1024 })
  const small = { text: 'x'.repeat(500) }
  const big = { text: 'x'.repeat(2000) }
  t.equal((await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:a', type: 't', payload: small })).status, 202)
  const tooBig = await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:a', type: 't', payload: big })
  t.match(tooBig, { status: 413, body: { statusCode: 413, message: /^payload: \d+ bytes .*EVENT_MAX_BYTES/ } })
  const channels = Array.from({ length: 20 }, (_, i) => `room:b${i}`)
  const amplified = await post(`${url}/realtime/broadcast`, serviceToken(), { channels, type: 't', payload: small })
  t.match(amplified, { status: 413, body: { message: /PUBLISH_MAX_BYTES/ } }, '20 × 500 B is over 4096 B of fan-out')
  t.equal((await post(`${url}/realtime/broadcast`, serviceToken(), { channels: channels.slice(0, 5), type: 't', payload: small })).status, 202)
})

t.test('system: event types are the gateway\'s own: 400', async (t) => {
  const { url } = await startServer(t)
  for (const [route, body] of [
    ['/realtime/publish', { channel: 'room:a', type: 'system:connected', payload: {} }],
    ['/realtime/broadcast', { channels: ['room:a'], type: 'system:reset', payload: {} }],
    ['/realtime/notify', { userId: '1', type: 'system:disconnect', payload: {} }]
  ] as const) {
    const res = await post(`${url}${route}`, serviceToken(), body)
    t.match(res, { status: 400, body: { message: /^type: types starting with system: are reserved/ } }, route)
  }
})

t.test('auth:refresh leaves the channels the new token may not read, and cannot drop exp', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const admin = await WsClient.connect(t, wsUrl, adminToken('boss'))
  await admin.request({ type: 'subscribe:admin' })
  await admin.subscribe(['product:1'])
  const refreshed = await admin.request({ type: 'auth:refresh', payload: { token: token('boss') } })
  t.equal(refreshed.type, 'auth:refreshed')
  t.match(await admin.next((f) => f.type === 'unsubscribed'), { payload: { channels: ['admin'] } }, 'announced')
  await post(`${url}/realtime/broadcast/inventory`, serviceToken(), { productId: '1', stock: 1, previousStock: 9 })
  t.match(await admin.next((f) => f.channel === 'product:1'), { type: 'inventory:updated' }, 'a channel it may still read')
  await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:marker', type: 't', payload: {} })
  t.equal(admin.events('admin').length, 0, 'no admin event after the refresh')
  const endless = await admin.request({ type: 'auth:refresh', payload: { token: mintToken(TEST_SECRET, { sub: 'boss' }) } })
  t.match(endless, { type: 'error', payload: { code: 'forbidden', message: /exp/ } })
})

t.test('ids beyond ±(2^53-1) are refused, never rounded onto another user', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const victim = await WsClient.connect(t, wsUrl, token('1234567890123456800'))
  const raw = await fetch(`${url}/realtime/notify`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${serviceToken()}` },
    body: '{"userId":1234567890123456789,"payload":{"secret":true}}'
  })
  t.equal(raw.status, 400)
  t.match(await raw.json(), { message: /userId/ })
  t.equal((await post(`${url}/realtime/notify`, serviceToken(), { userId: -42, payload: {} })).status, 202, 'a negative integer is an id')
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '1234567890123456800', payload: { mine: true } })
  t.match(await victim.next((f) => f.channel === 'user:1234567890123456800'), { payload: { mine: true } })
  t.equal(victim.events().length, 0, 'the refused notification never reached the rounded id')
  const bigSub = mintToken(TEST_SECRET, { sub: 2 ** 60 as unknown as string, ttlSeconds: 60 })
  await t.rejects(WsClient.connect(t, wsUrl, bigSub), /HTTP 401/, 'a numeric sub beyond 2^53: 401 at connect')
  const adminBig = mintToken(TEST_SECRET, { sub: 2 ** 60 as unknown as string, roles: ['service'], ttlSeconds: 60 })
  t.equal((await post(`${url}/realtime/notify`, adminBig, { userId: '1', payload: {} })).status, 401, 'and on HTTP')
})

t.test('deployments on one Redis that differ only by db number never see each other\'s events', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('db')
  await redisClient(t, prefix)
  await redisClient(t, prefix, `${REDIS_URL}/1`)
  const zero = await startServer(t, { REDIS_URL: `${REDIS_URL}/0`, REDIS_KEY_PREFIX: prefix })
  const one = await startServer(t, { REDIS_URL: `${REDIS_URL}/1`, REDIS_KEY_PREFIX: prefix })
  const listener = await WsClient.connect(t, one.wsUrl, adminToken('a1'))
  await listener.request({ type: 'subscribe:admin' })
  const user = await WsClient.connect(t, one.wsUrl, token('77'))
  await post(`${zero.url}/realtime/notify`, serviceToken(), { userId: '77', payload: { db: 0 } })
  await post(`${zero.url}/realtime/publish`, serviceToken(), { channel: 'admin', type: 't', payload: { db: 0 } })
  await post(`${one.url}/realtime/notify`, serviceToken(), { userId: '77', payload: { db: 1 } })
  t.match(await user.next((f) => f.channel === 'user:77'), { payload: { db: 1 } }, 'its own deployment\'s event arrives')
  t.same(user.events(), [], 'nothing from db 0 on user:77')
  t.same(listener.events(), [], 'nothing from db 0 on admin')
})

t.test('connections without a user are capped per client address', async (t) => {
  const { url, wsUrl } = await startServer(t, { ALLOW_ANONYMOUS: true, MAX_CONNECTIONS_PER_USER: 2 })
  const anonymous = [await WsClient.connect(t, wsUrl), await WsClient.connect(t, wsUrl)]
  const third = new WebSocket(wsUrl)
  t.equal((await once(third, 'close'))[0], 1013, 'a third anonymous WebSocket: 1013')
  const subless = mintToken(TEST_SECRET, { ttlSeconds: 60 })
  const withoutSub = new WebSocket(`${wsUrl}?token=${subless}`)
  t.equal((await once(withoutSub, 'close'))[0], 1013, 'a token without sub counts the same way')
  const sse = await SseClient.open(t, `${url}/sse?channels=product:1`)
  t.equal(sse.status, 503, 'SSE too')
  t.match(JSON.parse(sse.body), { message: /without a user from this address/ })
  await WsClient.connect(t, wsUrl, token('someone')).then((c) => t.ok(c, 'a signed-in user still connects'))
  anonymous[0].close()
  await anonymous[0].closed
  await WsClient.connect(t, wsUrl).then((c) => t.ok(c, 'a slot freed is a slot again'))
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_connections_refused_total\{transport="ws",reason="address_limit"\} 2/)
})

t.test('a token in a percent-encoded query key is masked in the log; a malformed URL never echoes it', async (t) => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(String(chunk)); done() } })
  const app = await buildApp(testConfig({ LOG_LEVEL: 'debug' }), { logger: { ...loggerOptions('debug'), stream: sink } })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const secret = token('leaky')
  await fetch(`http://127.0.0.1:${port}/health?%74oken=${secret}&TOKEN=${secret}&access_token=${secret}`)
  const bad = await rawRequest(port, `GET /x%?token=${secret} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.match(bad, /^HTTP\/1\.1 400/)
  const body = JSON.parse(bad.slice(bad.indexOf('\r\n\r\n') + 4))
  t.same(body, { statusCode: 400, error: 'Bad Request', message: 'malformed URL' })
  t.notMatch(bad, secret.slice(-20), 'the reply does not echo the token')
  t.ok(lines.length > 0, 'debug lines were logged')
  const leaked = lines.filter((line) => line.includes(secret.slice(-20)))
  t.same(leaked, [], 'no log line holds the token')
})

t.test('a query string that does not decode is a 400 "malformed URL" on every route, naming nothing of it', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const secret = token('q')
  for (const path of [
    `/sse?channels=room:a,%E0%A4%A&token=${secret}`, // a cut escape
    `/sse?channels=room:a&token=${secret}&x=%ZZ`, // not hex
    `/sse?channels=room:a%E0%A4&token=${secret}`, // hex, but not UTF-8
    '/realtime/history/room:a?limit=%',
    '/health?x=%2'
  ]) {
    const res = await fetch(`${url}${path}`)
    t.equal(res.status, 400, path)
    const body = await res.text()
    t.same(JSON.parse(body), { statusCode: 400, error: 'Bad Request', message: 'malformed URL' }, `${path}: the usual shape`)
    t.notMatch(body, /%|room:a|E0/, `${path}: nothing of the URL echoed`)
  }
  await t.rejects(WsClient.connect(t, `${wsUrl}?x=%E0%A4%A`, secret, { viaHeader: true }), /HTTP 400/, 'a WebSocket upgrade too, before it')
  const fine = await SseClient.open(t, `${url}/sse?channels=room%3Aa%2Croom%3Ab&token=${encodeURIComponent(secret)}`)
  t.equal(fine.status, 200, 'escapes that decode are read as before')
  t.match((await fine.waitFor(1))[0].data, { channels: ['user:q', 'room:a', 'room:b'] })
})

t.test('an upgrade answered 400 before any route (malformed URL) has its socket closed, not left open for good', async (t) => {
  const { url } = await startServer(t)
  const { port } = new URL(url)
  const upgrade = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n'
  // The client never closes: the server must (a socket it kept would be a file descriptor for good).
  for (const path of ['/ws%ZZ', '/realtime/history/%C0%AF', `/ws?token=${token('u')}&x=%E0%A4%A`, `/realtime/history/${'a'.repeat(700)}`]) {
    const socket = connect(Number(port), '127.0.0.1')
    socket.on('error', () => {})
    await once(socket, 'connect')
    socket.write(upgrade(path))
    let reply = ''
    socket.on('data', (d) => { reply += String(d) })
    const ended = await Promise.race([once(socket, 'end').then(() => true), sleep(3000).then(() => false)])
    socket.destroy()
    t.match(reply, /^HTTP\/1\.1 400 /, `${path.slice(0, 40)}: 400`)
    t.ok(ended, `${path.slice(0, 40)}: the server closed the socket`)
  }
})

t.test('a request body that never finishes is cut after REQUEST_TIMEOUT_MS; streams are not', async (t) => {
  const { url } = await startServer(t, { REQUEST_TIMEOUT_MS: 1000 })
  const { port } = new URL(url)
  const sse = await SseClient.open(t, `${url}/sse?token=${token('s')}`)
  const socket = connect(Number(port), '127.0.0.1')
  await once(socket, 'connect')
  socket.write(`POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${serviceToken()}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"chan`)
  const started = Date.now()
  const reply = await new Promise<string>((resolve) => {
    let text = ''
    socket.on('data', (d) => { text += String(d) })
    socket.on('close', () => resolve(text))
  })
  t.ok(Date.now() - started < 40_000, 'the socket was not held forever')
  t.match(reply, /^HTTP\/1\.1 408|^$/, 'a 408, or the socket closed')
  t.equal(sse.ended, false, 'a long-lived SSE stream is not a slow request')
})

t.test('a request line and headers over MAX_HEADER_BYTES (64 KiB): 431 on every route, the WebSocket upgrade too', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const long = 'v1;' + 'room:a,e,1;'.repeat(6000)
  t.equal((await fetch(`${url}/sse?channels=room:a&token=${token('h')}&lastEventId=${long}`)).status, 431, 'SSE, a long query')
  t.equal((await fetch(`${url}/sse?channels=room:a&token=${token('h')}`, { headers: { 'last-event-id': long } })).status, 431, 'SSE, a long header')
  t.equal((await fetch(`${url}/realtime/publish?x=${long}`, { method: 'POST' })).status, 431, 'HTTP API')
  await t.rejects(WsClient.connect(t, `${wsUrl}?pad=${long}`, token('h')), /HTTP 431/, 'WebSocket upgrade')
  t.equal((await fetch(`${url}/health`)).status, 200, 'served meanwhile')
})

t.test('JWT_ISSUER and JWT_AUDIENCE, when set, are required', async (t) => {
  const { wsUrl } = await startServer(t, { JWT_ISSUER: 'https://id.shop.example', JWT_AUDIENCE: 'realtime' })
  const good = mintToken(TEST_SECRET, { sub: '1', iss: 'https://id.shop.example', aud: 'realtime', ttlSeconds: 60 })
  t.ok(await WsClient.connect(t, wsUrl, good), 'the right issuer and audience')
  for (const claims of [{ iss: 'https://evil.example', aud: 'realtime' }, { iss: 'https://id.shop.example', aud: 'other' }, {}]) {
    await t.rejects(WsClient.connect(t, wsUrl, mintToken(TEST_SECRET, { sub: '1', ...claims, ttlSeconds: 60 })), /HTTP 401/,
      JSON.stringify(claims))
  }
})

t.test('a frame over the size limit always gets its 1009 close frame, never a bare drop', async (t) => {
  const { wsUrl } = await startServer(t, { WS_MAX_PAYLOAD_BYTES: 1024 })
  const codes: number[] = []
  for (let i = 0; i < 30; i++) {
    const client = await WsClient.connect(t, wsUrl, token(`big-${i}`))
    // More input right behind the oversized frame: what the server does not read must not turn its FIN into a RST.
    client.send({ type: 'system:ping', pad: 'x'.repeat(512 * 1024) })
    client.send({ type: 'system:ping', pad: 'y'.repeat(512) })
    codes.push((await client.closed).code)
  }
  t.same(codes, Array(30).fill(1009))
})

t.test('frames queued behind a slow subscribe of a client that has gone are dropped, not failed and logged', async (t) => {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, done) { lines.push(String(chunk)); done() } })
  let release = (): void => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  const app = await buildApp(testConfig(), {
    logger: { ...loggerOptions('info'), stream: sink },
    createBroker: (deliver, reset) => {
      // A history read that takes as long as the test says, as a busy Redis's may.
      const broker = new MemoryBroker({ deliver, reset, historySize: 10, historyTtlSeconds: 60 })
      const history = broker.history.bind(broker)
      broker.history = async (channel, since) => {
        if (channel === 'room:slow') await gate
        return await history(channel, since)
      }
      return broker
    }
  })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const client = await WsClient.connect(t, `ws://127.0.0.1:${port}/ws`, token('gone'))
  client.send({ type: 'subscribe', payload: { channels: ['room:slow'] } })
  client.send({ type: 'subscribe', payload: { channels: ['room:queued'] } })
  client.close()
  await client.closed
  for (let waited = 0; app.hub.stats().totalConnections > 0 && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20))
  release()
  await new Promise((resolve) => setTimeout(resolve, 200))
  const failures = lines.map((l) => JSON.parse(l) as { level: number, msg: string }).filter((l) => l.level >= 50)
  t.same(failures.map((l) => l.msg), [], 'nothing logged as failed')
  t.same(app.hub.stats().channels, 0, 'and nothing left subscribed')
})

/** A WebSocket client on a bare socket: what arrived, frame by frame, and how it ended. */
function rawWebSocket (port: number, path: string) {
  const socket = connect(port, '127.0.0.1')
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  let input = Buffer.alloc(0)
  let upgraded = false
  const result = { frames: 0, closeCode: null as number | null, error: null as string | null }
  const upgrade = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      input = Buffer.concat([input, chunk])
      if (!upgraded) {
        const end = input.indexOf('\r\n\r\n')
        if (end < 0) return
        if (!input.subarray(0, 12).toString().includes('101')) { reject(new Error(input.toString())); return }
        upgraded = true
        input = input.subarray(end + 4)
        resolve()
      }
      for (;;) {
        if (input.length < 2) return
        const length = input[1] & 0x7f
        const start = length === 126 ? 4 : length === 127 ? 10 : 2
        if (input.length < start) return
        const size = length === 126 ? input.readUInt16BE(2) : length === 127 ? Number(input.readBigUInt64BE(2)) : length
        if (input.length < start + size) return
        result.frames++
        if ((input[0] & 0x0f) === 8) { result.closeCode = input.readUInt16BE(start); socket.end() }
        input = input.subarray(start + size)
      }
    })
  })
  socket.on('error', (err: NodeJS.ErrnoException) => { result.error = err.code ?? err.message })
  const ended = once(socket, 'close').then(() => result)
  return { socket, upgrade, ended }
}

t.test('the 1009 close frame waits behind what the server still had to send a slow reader, and arrives', async (t) => {
  // A frame over the limit from a client that is not reading: the close frame is queued
  // behind megabytes of events. Cutting the socket at once threw all of it away (1006).
  const { app, url } = await startServer(t, { WS_MAX_PAYLOAD_BYTES: 1024, SEND_BUFFER_LIMIT_BYTES: 64 * 1024 * 1024 })
  const client = rawWebSocket(Number(new URL(url).port), `/ws?token=${token('slow-reader')}`)
  await client.upgrade
  client.socket.pause()
  const big = 'x'.repeat(60 * 1024)
  for (let i = 0; i < 300; i++) await app.hub.broker.publish({ channel: 'user:slow-reader', type: 'bulk', payload: { i, big } })
  await new Promise((resolve) => setTimeout(resolve, 200))
  const size = 512 * 1024
  client.socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | 127, 0, 0, 0, 0, 0, size >> 16 & 0xff, size >> 8 & 0xff, 0, 1, 2, 3, 4]), Buffer.alloc(size, 0x61)]))
  await new Promise((resolve) => setTimeout(resolve, 200))
  client.socket.resume()
  const result = await client.ended
  t.equal(result.closeCode, 1009, `the close frame arrived after ${result.frames - 1} frames (${result.error ?? 'no socket error'})`)
  t.equal((await fetch(`${url}/health`)).status, 200, 'the server is unharmed')
})

async function rawRequest (port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.write(text)
  let reply = ''
  socket.on('data', (d) => { reply += String(d) })
  await once(socket, 'close')
  return reply
}

import { createHmac } from 'node:crypto'
import { once } from 'node:events'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { mintToken } from '../../lib/auth/token.js'
import { adminToken, post, requireService, serviceToken, sleep, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// The control plane (issue 15): disconnect and revoke on every instance, allowed origins.
const redisUp = await redisAvailable()
const nowSeconds = () => Math.floor(Date.now() / 1000)
const metricsOf = async (url: string) => await (await fetch(`${url}/metrics`)).text()
/** A token issued `ago` seconds before now (iat), valid for an hour. */
const issued = (sub: string, ago: number, claims: Record<string, unknown> = {}) =>
  mintToken(TEST_SECRET, { sub, ttlSeconds: 3600, ...claims }, Date.now() - ago * 1000)

/** An HS256 token with exactly these claims (mintToken always adds iat). */
function signed (claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`
  return `${unsigned}.${createHmac('sha256', TEST_SECRET).update(unsigned).digest('base64url')}`
}

async function twoOnRedis (t: Test) {
  const prefix = uniquePrefix('control')
  await redisClient(t, prefix)
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix }
  return { settings, a: await startServer(t, settings), b: await startServer(t, settings) }
}

t.test('disconnect: every connection of the users, on every instance; WS 4003, SSE system:disconnect', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { a, b } = await twoOnRedis(t)
  const wsOnA = await WsClient.connect(t, a.wsUrl, token('bad-user'))
  const sseOnB = await SseClient.open(t, `${b.url}/sse?channels=product:1&token=${token('bad-user')}`)
  await sseOnB.waitFor(1)
  const wsOnB = await WsClient.connect(t, b.wsUrl, token('bad-user'))
  const bystander = await WsClient.connect(t, b.wsUrl, token('good-user'))
  const res = await post(`${a.url}/realtime/disconnect`, serviceToken(), { userId: 'bad-user', reason: 'account suspended' })
  const answered = Date.now()
  t.match(res, { status: 202, body: { userIds: ['bad-user'] } })
  const sseClosedOnB = sseOnB.waitFor(1, (e) => e.event === 'system:disconnect', 1000)
  const wsClosedOnB = Promise.race([wsOnB.closed, sleep(1000).then(() => null)])
  t.same(await wsOnA.closed, { code: 4003, reason: 'account suspended' }, 'the WebSocket gets 4003 with the reason')
  const [bye] = await sseClosedOnB
  t.same(bye.data, { code: 4003, reason: 'account suspended' })
  t.same(await wsClosedOnB, { code: 4003, reason: 'account suspended' }, 'the other instance closes its WebSocket too')
  t.ok(Date.now() - answered <= 1000, `the other instance's SSE and WebSocket within a second of the 202 (${Date.now() - answered} ms)`)
  t.match(await metricsOf(a.url), /^gateway_disconnects_total\{cause="disconnect"\} 1$/m, 'metric: the connection closed on the instance that answered')
  t.match(await metricsOf(b.url), /^gateway_disconnects_total\{cause="disconnect"\} 2$/m, 'and the two on the other')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.ok(sseOnB.ended, 'and the stream ends')
  t.match(await bystander.request({ type: 'system:ping' }), { type: 'system:pong' }, 'others stay')
  t.ok(await WsClient.connect(t, b.wsUrl, token('bad-user')), 'they may connect again')
  t.match(await post(`${b.url}/realtime/disconnect`, adminToken(), { userIds: [1, '2', 1] }), { status: 202, body: { userIds: ['1', '2'] } })
})

t.test('revoke a user: tokens issued up to then are refused everywhere (401), live ones closed; later tokens work', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { settings, a, b } = await twoOnRedis(t)
  const old = issued('leaver', 60)
  const ws = await WsClient.connect(t, b.wsUrl, old)
  const noIat = signed({ sub: 'leaver', exp: nowSeconds() + 3600 })
  const res = await post(`${a.url}/realtime/revoke`, serviceToken(), { userId: 'leaver', issuedBefore: nowSeconds() - 5 })
  t.equal(res.status, 202)
  t.match(res.body, { userId: 'leaver', issuedBefore: /^\d{4}-/ })
  t.equal((await ws.closed).code, 4003, 'the live connection is closed')
  t.match(await metricsOf(a.url), /^gateway_revocations_total\{kind="user"\} 1$/m, 'metric: the revocation, on the instance that made it')
  t.match(await metricsOf(b.url), /^gateway_disconnects_total\{cause="revoke"\} 1$/m, 'metric: the connection it closed, on the other')
  await t.rejects(WsClient.connect(t, a.wsUrl, old), /HTTP 401/, 'the old token: 401 on the other instance')
  t.equal((await SseClient.open(t, `${b.url}/sse?token=${old}`)).status, 401, 'and over SSE (EventSource stops retrying)')
  t.ok(await WsClient.connect(t, a.wsUrl, issued('leaver', 0)), 'a token issued after issuedBefore works')
  await t.rejects(WsClient.connect(t, a.wsUrl, noIat), /HTTP 401/, 'a token without iat counts as issued before')
  const later = await startServer(t, settings)
  await t.rejects(WsClient.connect(t, later.wsUrl, old), /HTTP 401/, 'an instance started later refuses it too')
  const fresh = await WsClient.connect(t, a.wsUrl, issued('leaver', 0))
  const refresh = await fresh.request({ type: 'auth:refresh', payload: { token: old } })
  t.match(refresh, { type: 'error', payload: { code: 'forbidden' } }, 'auth:refresh with a revoked token: forbidden')
  const revokedService = issued('svc-gone', 60, { roles: ['service'] })
  await post(`${a.url}/realtime/revoke`, adminToken(), { userId: 'svc-gone', issuedBefore: new Date().toISOString() })
  const publishOn = async (url: string) => (await post(`${url}/realtime/publish`, revokedService, { channel: 'room:x', type: 't', payload: {} })).status
  t.equal(await publishOn(a.url), 401, 'on HTTP too: at once on the instance that answered the revoke')
  await eventually('the other instance refuses it (within a second)', async () => await publishOn(b.url) === 401, 1000)
  t.pass('and on the other instance within a second')
})

t.test('revoke one token by jti; the user\'s other tokens still work', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { a, b } = await twoOnRedis(t)
  const stolen = issued('owner', 10, { jti: 'tok-1' })
  const other = issued('owner', 10, { jti: 'tok-2' })
  const ws1 = await WsClient.connect(t, a.wsUrl, stolen)
  const ws2 = await WsClient.connect(t, b.wsUrl, other)
  const res = await post(`${b.url}/realtime/revoke`, serviceToken(), { jti: 'tok-1', expiresAt: nowSeconds() + 600 })
  t.match(res, { status: 202, body: { jti: 'tok-1', expiresAt: /^\d{4}-/ } })
  t.match(await metricsOf(b.url), /^gateway_revocations_total\{kind="jti"\} 1$/m)
  t.equal((await ws1.closed).code, 4003)
  await t.rejects(WsClient.connect(t, b.wsUrl, stolen), /HTTP 401/)
  t.match(await ws2.request({ type: 'system:ping' }), { type: 'system:pong' }, 'the other token\'s connection stays')
})

t.test('a disconnect while an SSE stream is being set up: the stream opens, says system:disconnect and ends', async (t) => {
  // Audit: a disconnect or revoke racing the stream's subscription answered an empty 200
  // (no text/event-stream), which EventSource takes as fatal, never seeing the disconnect.
  const { app, url } = await startServer(t)
  let entered = (): void => {}
  const subscribing = new Promise<void>((resolve) => { entered = resolve })
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const subscribe = app.hub.subscribe.bind(app.hub)
  app.hub.subscribe = async (...args: Parameters<typeof subscribe>) => {
    entered()
    await held
    return await subscribe(...args)
  }
  const opening = SseClient.open(t, `${url}/sse?channels=room:race&token=${token('racer')}`)
  await subscribing
  t.match(await post(`${url}/realtime/disconnect`, serviceToken(), { userId: 'racer', reason: 'signed out' }), { status: 202, body: { userIds: ['racer'] } })
  release()
  const sse = await opening
  t.equal(sse.status, 200)
  t.match(sse.headers.get('content-type'), /^text\/event-stream/, 'a stream EventSource reads')
  const events = await sse.waitFor(2, undefined, 2000)
  t.same(events.map((e) => e.event), ['system:connected', 'system:disconnect'])
  t.same(events[1].data, { code: 4003, reason: 'signed out' })
  await eventually('the stream ends', async () => sse.ended, 1000)
  await eventually('the connection is gone from the hub', async () => app.hub.connectionCount() === 0, 1000)
})

t.test('disconnect and revoke on the embedded broker (one instance)', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const ws = await WsClient.connect(t, wsUrl, issued('solo', 30))
  await post(`${url}/realtime/disconnect`, serviceToken(), { userIds: ['solo'] })
  t.equal((await ws.closed).code, 4003)
  const again = await WsClient.connect(t, wsUrl, issued('solo', 30))
  await post(`${url}/realtime/revoke`, serviceToken(), { userId: 'solo' })
  t.equal((await again.closed).code, 4003)
  await t.rejects(WsClient.connect(t, wsUrl, issued('solo', 30)), /HTTP 401/)
})

t.test('a sub outside the channel alphabet (auth0|123) connects, so it can be disconnected and revoked by userId', async (t) => {
  const { url, wsUrl } = await startServer(t)
  for (const sub of ['auth0|123', 'a b', 'é/{x}']) {
    const ws = await WsClient.connect(t, wsUrl, issued(sub, 30))
    const sse = await SseClient.open(t, `${url}/sse?token=${encodeURIComponent(issued(sub, 30))}`)
    await sse.waitFor(1)
    const res = await post(`${url}/realtime/disconnect`, serviceToken(), { userId: sub })
    t.match(res, { status: 202, body: { userIds: [sub] } }, `${sub}: disconnect answers 202`)
    t.equal((await ws.closed).code, 4003, `${sub}: its WebSocket is closed with 4003`)
    const [bye] = await sse.waitFor(1, (e) => e.event === 'system:disconnect', 1000)
    t.equal((bye.data as { code: number }).code, 4003, `${sub}: its stream gets system:disconnect`)
    const again = await WsClient.connect(t, wsUrl, issued(sub, 30))
    t.match(await post(`${url}/realtime/revoke`, serviceToken(), { userId: sub }), { status: 202, body: { userId: sub } })
    t.equal((await again.closed).code, 4003, `${sub}: a revocation closes it`)
    await t.rejects(WsClient.connect(t, wsUrl, issued(sub, 30)), /HTTP 401/, `${sub}: and refuses its token`)
  }
  t.ok(await WsClient.connect(t, wsUrl, issued('auth0|1234', 30)), 'another user whose sub begins the same is not touched')
})

t.test('a reason longer than a close frame holds still closes with 4003, not a bare drop', async (t) => {
  const { url, wsUrl } = await startServer(t)
  // A WebSocket close reason is at most 123 bytes (RFC 6455 §5.5); the API takes 200 characters.
  for (const [sub, reason] of [['long-ascii', 'x'.repeat(200)], ['long-utf8', 'é'.repeat(100)]]) {
    const ws = await WsClient.connect(t, wsUrl, token(sub))
    const sse = await SseClient.open(t, `${url}/sse?token=${token(sub)}`)
    await sse.waitFor(1)
    t.equal((await post(`${url}/realtime/disconnect`, serviceToken(), { userId: sub, reason })).status, 202)
    const closed = await ws.closed
    t.equal(closed.code, 4003, `${sub}: the close frame arrives`)
    t.ok(Buffer.byteLength(closed.reason) <= 123 && reason.startsWith(closed.reason), `${sub}: with as much of the reason as fits, whole characters only`)
    const [bye] = await sse.waitFor(1, (e) => e.event === 'system:disconnect', 1000)
    t.same(bye.data, { code: 4003, reason }, `${sub}: SSE has no such limit and gets all of it`)
  }
  const revoked = await WsClient.connect(t, wsUrl, issued('long-revoked', 30))
  await post(`${url}/realtime/revoke`, serviceToken(), { userId: 'long-revoked', reason: 'r'.repeat(200) })
  t.equal((await revoked.closed).code, 4003, 'a revocation with a long reason too')
})

t.test('bad input: 400 naming the field; users and other roles: 403', async (t) => {
  const { url } = await startServer(t)
  const cases: Array<[string, unknown, RegExp]> = [
    ['/realtime/disconnect', {}, /userId/],
    ['/realtime/disconnect', { userIds: [] }, /userIds/],
    ['/realtime/disconnect', { userId: '' }, /userId/],
    ['/realtime/disconnect', { userIds: ['x'.repeat(1025)] }, /userIds/],
    ['/realtime/revoke', { userId: 2 ** 53 }, /userId/],
    ['/realtime/disconnect', 'not json', /JSON/],
    ['/realtime/disconnect', '', /empty/],
    ['/realtime/disconnect', 'null', /body/],
    ['/realtime/revoke', '[]', /body/],
    ['/realtime/revoke', {}, /userId/],
    ['/realtime/revoke', { userId: 'u', issuedBefore: 'yesterday' }, /issuedBefore/],
    ['/realtime/revoke', { userId: 'u', issuedBefore: -5 }, /issuedBefore/],
    ['/realtime/revoke', { userId: 'u', issuedBefore: 1.5 }, /issuedBefore/],
    ['/realtime/revoke', { userId: 'u', issuedBefore: '2026-02-30' }, /issuedBefore/],
    ['/realtime/revoke', { userId: 'u', issuedBefore: '2026-01-01T25:00:00Z' }, /issuedBefore/],
    ['/realtime/revoke', { jti: 'j', expiresAt: '2026-04-31T00:00:00Z' }, /expiresAt/],
    ['/realtime/revoke', { userId: 'u', jti: 'j' }, /jti/],
    ['/realtime/revoke', { jti: '' }, /jti/],
    ['/realtime/revoke', { jti: 'j', expiresAt: '2026-13-45T99:00:00Z' }, /expiresAt/]
  ]
  for (const [route, body, field] of cases) {
    const res = await post(`${url}${route}`, serviceToken(), body)
    t.equal(res.status, 400, `${route} ${JSON.stringify(body)}`)
    t.match(res.body.message, field)
  }
  t.equal((await post(`${url}/realtime/revoke`, serviceToken(), { userId: 'leap', issuedBefore: '2024-02-29T12:00:00Z' })).status, 202, 'a leap day is a day')
  t.equal((await post(`${url}/realtime/disconnect`, token('u'), { userId: 'x' })).status, 403, 'a user')
  t.equal((await post(`${url}/realtime/revoke`, token('u', ['reader']), { userId: 'x' })).status, 403, 'another role')
  t.equal((await post(`${url}/realtime/revoke`, undefined, { userId: 'x' })).status, 401)
})

t.test('WS_ALLOWED_ORIGINS: a browser from another origin is refused with 403 before the upgrade or any event', async (t) => {
  // Written as an operator may write them (a trailing slash, capitals, the default port):
  // matched as the browser sends its Origin.
  const { url, wsUrl } = await startServer(t, { WS_ALLOWED_ORIGINS: 'https://Shop.example/, https://admin.shop.example:443' })
  const refused = new WebSocket(`${wsUrl}?token=${token('o')}`, { headers: { origin: 'https://evil.example' } })
  const [, response] = await once(refused, 'unexpected-response')
  t.equal(response.statusCode, 403, 'WS: 403, no upgrade')
  const sse = await SseClient.open(t, `${url}/sse?token=${token('o')}`, { origin: 'https://evil.example' })
  t.equal(sse.status, 403, 'SSE: 403')
  t.same(sse.events, [])
  const allowed = new WebSocket(`${wsUrl}?token=${token('o')}`, { headers: { origin: 'https://shop.example' } })
  await once(allowed, 'open')
  allowed.close()
  t.ok(await WsClient.connect(t, wsUrl, token('o')), 'no Origin (not a browser): allowed')
  const stream = await SseClient.open(t, `${url}/sse?token=${token('o')}`, { origin: 'https://admin.shop.example' })
  t.equal(stream.status, 200)
  // CORS_ORIGIN (here the default `*`) or, for an origin it leaves out, WS_ALLOWED_ORIGINS: EventSource may read the stream.
  t.equal(stream.headers.get('access-control-allow-origin'), '*')
  const metrics = await (await fetch(`${url}/metrics`)).text()
  t.match(metrics, /gateway_origins_refused_total\{transport="ws"\} 1/)
  t.match(metrics, /gateway_origins_refused_total\{transport="sse"\} 1/)
})

t.test('an origin WS_ALLOWED_ORIGINS names but CORS_ORIGIN leaves out may read the SSE stream from a browser', async (t) => {
  const { url } = await startServer(t, { WS_ALLOWED_ORIGINS: 'https://shop.example, http://localhost:8080', CORS_ORIGIN: 'https://shop.example' })
  const local = await SseClient.open(t, `${url}/sse?token=${token('o')}`, { origin: 'http://localhost:8080' })
  t.equal(local.status, 200)
  t.equal(local.headers.get('access-control-allow-origin'), 'http://localhost:8080', 'EventSource from that origin can read it')
  t.equal(local.headers.get('access-control-allow-credentials'), 'true')
  t.match(local.headers.get('vary') ?? '', /Origin/)
  local.close()
  const shop = await SseClient.open(t, `${url}/sse?token=${token('o')}`, { origin: 'https://shop.example' })
  t.equal(shop.headers.get('access-control-allow-origin'), 'https://shop.example', 'as CORS_ORIGIN allows it')
  shop.close()
  // Not a stream: CORS_ORIGIN alone decides for the HTTP API.
  t.equal((await fetch(`${url}/health`, { headers: { origin: 'http://localhost:8080' } })).headers.get('access-control-allow-origin'), null)
})

t.test('WS_ALLOWED_ORIGINS=* leaves the stream\'s CORS to CORS_ORIGIN', async (t) => {
  const { url } = await startServer(t, { CORS_ORIGIN: 'https://shop.example' })
  const other = await SseClient.open(t, `${url}/sse?token=${token('o')}`, { origin: 'https://other.example' })
  t.equal(other.status, 200, 'any origin may open it')
  t.equal(other.headers.get('access-control-allow-origin'), null, 'but only CORS_ORIGIN\'s may read it from a browser')
  other.close()
})

import t, { type Test } from 'tap'
import { mintToken } from '../../lib/auth/token.js'
import { adminToken, post, serviceToken, SseClient, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'

type Frame = Record<string, any>

/** One client per channel, so "delivered to the right channels and not others" is visible. */
async function audience (t: Test, wsUrl: string) {
  const connect = async (bearer: string, channels: string[] = []) => {
    const client = await WsClient.connect(t, wsUrl, bearer)
    if (channels.length > 0) await client.subscribe(channels)
    return client
  }
  return {
    'user:42': await connect(token('42')),
    'user:43': await connect(token('43')),
    admin: await connect(adminToken('admin-a'), ['admin']),
    orders: await connect(adminToken('admin-o'), ['orders']),
    'product:7': await connect(token('p7'), ['product:7']),
    inventory: await connect(token('inv'), ['inventory']),
    products: await connect(token('prods'), ['products'])
  }
}
type Audience = Awaited<ReturnType<typeof audience>>

/** After a ping round trip on every client, the events each got (and forgets them), as `type@channel`. */
async function collect (clients: Audience): Promise<Record<string, string[]>> {
  await Promise.all(Object.values(clients).map((c) => c.request({ type: 'system:ping' })))
  const got: Record<string, string[]> = {}
  for (const [name, client] of Object.entries(clients)) {
    const events = client.events()
    client.frames.splice(0)
    if (events.length > 0) got[name] = events.map((e: Frame) => `${e.type}@${e.channel}`)
  }
  return got
}

t.test('every publishing route delivers to its channels and no others', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const clients = await audience(t, wsUrl)
  const svc = serviceToken()
  const cases: Array<[string, string, unknown, Record<string, string[]>]> = [
    ['publish', '/realtime/publish', { channel: 'product:7', type: 'price:changed', payload: { price: 9 } },
      { 'product:7': ['price:changed@product:7'] }],
    ['broadcast', '/realtime/broadcast', { channels: ['user:42', 'inventory', 'products'], type: 'sale', payload: {} },
      { 'user:42': ['sale@user:42'], inventory: ['sale@inventory'], products: ['sale@products'] }],
    ['notify one', '/realtime/notify', { userId: '42', payload: { text: 'hi' } },
      { 'user:42': ['notification@user:42'] }],
    ['notify many', '/realtime/notify', { userIds: ['42', '43'], type: 'promo', payload: {} },
      { 'user:42': ['promo@user:42'], 'user:43': ['promo@user:43'] }],
    ['order', '/realtime/broadcast/order', { userId: '42', orderId: 'o-1', status: 'shipped', previousStatus: 'paid' },
      { 'user:42': ['order:updated@user:42'], admin: ['admin:order:updated@admin'], orders: ['admin:order:updated@orders'] }],
    ['inventory crossing the threshold', '/realtime/broadcast/inventory', { productId: 7, stock: 3, previousStock: 10, sku: 'S7' },
      { 'product:7': ['inventory:updated@product:7'], inventory: ['inventory:updated@inventory'], admin: ['admin:inventory:updated@admin', 'admin:alert@admin'] }],
    ['inventory already below', '/realtime/broadcast/inventory', { productId: 7, stock: 2, previousStock: 3 },
      { 'product:7': ['inventory:updated@product:7'], inventory: ['inventory:updated@inventory'], admin: ['admin:inventory:updated@admin'] }],
    ['inventory low with no previous stock', '/realtime/broadcast/inventory', { productId: 7, stock: 5 },
      { 'product:7': ['inventory:updated@product:7'], inventory: ['inventory:updated@inventory'], admin: ['admin:inventory:updated@admin', 'admin:alert@admin'] }],
    ['inventory above', '/realtime/broadcast/inventory', { productId: 7, stock: 40 },
      { 'product:7': ['inventory:updated@product:7'], inventory: ['inventory:updated@inventory'], admin: ['admin:inventory:updated@admin'] }],
    ['test notification', '/realtime/test/notification', { userId: '43', title: 'T', message: 'M' },
      { 'user:43': ['notification@user:43'] }]
  ]
  for (const [what, route, body, expected] of cases) {
    const res = await post(url + route, svc, body)
    t.equal(res.status, 202, `${what}: 202`)
    const channels = [...new Set(Object.values(expected).flat().map((e) => e.split('@')[1]))].sort()
    t.same(Object.keys(res.body.positions).sort(), channels, `${what}: a position per channel`)
    for (const position of Object.values(res.body.positions) as Frame[]) t.match(position, { offset: Number, epoch: String })
    t.same(await collect(clients), expected, `${what}: exactly these deliveries`)
  }

  // Payloads as the contract describes them.
  await post(`${url}/realtime/broadcast/order`, svc, { userId: 42, orderId: 'o-2', status: 'paid' })
  t.match(await clients['user:42'].next((f) => f.type === 'order:updated'), { payload: { orderId: 'o-2', status: 'paid', userId: '42' } })
  t.match(await clients.orders.next((f) => f.type === 'admin:order:updated'), { payload: { orderId: 'o-2' } })
  await post(`${url}/realtime/test/notification`, svc, { userId: '43', title: 'T', message: 'M' })
  t.match(await clients['user:43'].next((f) => f.type === 'notification'), { payload: { title: 'T', message: 'M' } })
  await post(`${url}/realtime/broadcast/inventory`, adminToken(), { productId: 7, stock: 1, previousStock: 9, productName: 'Mug' })
  t.match(await clients.admin.next((f) => f.type === 'admin:alert'), { payload: { productId: 7, stock: 1, threshold: 5 } }, 'an admin token may publish too')
})

t.test('a channel named __proto__ is a channel like any other: its position is in the receipt', async (t) => {
  const { url } = await startServer(t)
  const res = await post(`${url}/realtime/broadcast`, serviceToken(), { channels: ['__proto__', 'constructor', 'room:x'], type: 'odd', payload: {} })
  t.equal(res.status, 202)
  t.same(Object.keys(res.body.positions).sort(), ['__proto__', 'constructor', 'room:x'])
  t.match(Object.getOwnPropertyDescriptor(res.body.positions, '__proto__')?.value, { offset: 1, epoch: String }, 'its own key, not the prototype')
  const history = await fetch(`${url}/realtime/history/__proto__`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.match(await history.json(), { channel: '__proto__', events: [{ type: 'odd', offset: 1 }], position: { offset: 1 } }, 'and its history')
})

t.test('JSON bodies: a prototype key is a 400 that says so; not JSON, empty, too large as before', async (t) => {
  const { url } = await startServer(t, { BODY_LIMIT_BYTES: 4096 })
  const send = async (body: string) => {
    const res = await fetch(`${url}/realtime/publish`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' }, body })
    return { status: res.status, body: await res.json() as Frame }
  }
  const prototype = { statusCode: 400, error: 'Bad Request', message: /^body: a key named "__proto__", or a "constructor" key holding "prototype", is not accepted/ }
  t.match(await send('{"channel":"room:a","type":"t","payload":{"__proto__":{"x":1}}}'), { status: 400, body: prototype })
  t.match(await send('{"channel":"room:a","type":"t","payload":{"a":[{"\\u005f_proto__":1}]}}'), { status: 400, body: prototype }, 'escaped, in an array')
  t.match(await send('{"channel":"room:a","type":"t","payload":{"constructor":{"prototype":{}}}}'), { status: 400, body: prototype })
  t.match(await send('{"channel":"room:a","type":"t","payload":{"x":'), { status: 400, body: { message: 'Body is not valid JSON but content-type is set to \'application/json\'' } }, 'not JSON: no part of it echoed')
  t.match(await send(''), { status: 400, body: { message: /cannot be empty/ } })
  t.match(await send(JSON.stringify({ channel: 'room:a', type: 't', payload: { x: 'y'.repeat(5000) } })), { status: 413 })
  const fine = await send('\ufeff{"channel":"room:a","type":"t","payload":{"constructor":"c","note":"__proto__"}}')
  t.match(fine, { status: 202, body: { positions: { 'room:a': { offset: 1 } } } }, 'a BOM, and those words as a plain key or a value, are fine')
  const history = await fetch(`${url}/realtime/history/room:a`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.match(await history.json(), { events: [{ payload: { constructor: 'c', note: '__proto__' } }] })
})

t.test('JSON bodies: a number beyond ±1.8e308 is a 400 naming its field, not an event that says null', async (t) => {
  const { url } = await startServer(t)
  const send = async (path: string, body: string) => {
    const res = await fetch(`${url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' }, body })
    return { status: res.status, body: await res.json() as Frame }
  }
  t.match(await send('/realtime/publish', '{"channel":"room:n","type":"t","payload":{"items":[{"price":1e999}]}}'),
    { status: 400, body: { statusCode: 400, error: 'Bad Request', message: /^payload\.items\.0\.price: a number beyond/ } })
  t.match(await send('/realtime/broadcast/inventory', '{"productId":"p1","stock":-1e400}'), { status: 400, body: { message: /^stock: a number beyond/ } })
  t.match(await send('/realtime/publish', '{"channel":"room:n","type":"t","payload":{"big":1e308,"tiny":1e-999,"code":"e12345"}}'), { status: 202 }, 'large, tiny and look-alike numbers that fit are fine')
  const history = await fetch(`${url}/realtime/history/room:n`, { headers: { authorization: `Bearer ${serviceToken()}` } })
  t.match(await history.json(), { events: [{ offset: 1, payload: { big: 1e308, tiny: 0, code: 'e12345' } }] }, 'only the publish that fits was taken')
})

t.test('LOW_STOCK_THRESHOLD is the configured one', async (t) => {
  const { url, wsUrl } = await startServer(t, { LOW_STOCK_THRESHOLD: 20 })
  const admin = await WsClient.connect(t, wsUrl, adminToken())
  await admin.request({ type: 'subscribe:admin' })
  await post(`${url}/realtime/broadcast/inventory`, serviceToken(), { productId: 1, stock: 15, previousStock: 25 })
  t.match(await admin.next((f) => f.type === 'admin:alert'), { payload: { threshold: 20, stock: 15 } })
})

t.test('refusals: 401, 403, 400 naming the field, 413; none disturbs a connected client', async (t) => {
  const { url, wsUrl } = await startServer(t, { BODY_LIMIT_BYTES: 16_384 })
  const watcher = await WsClient.connect(t, wsUrl, token('42'))
  await watcher.subscribe(['product:1'])
  const good = { channel: 'product:1', type: 't', payload: {} }
  const publish = `${url}/realtime/publish`

  t.equal((await post(publish, undefined, good)).status, 401, 'no token')
  t.equal((await post(publish, 'not-a-jwt', good)).status, 401, 'a bad token')
  t.equal((await post(publish, token('svc', ['service'], -10), good)).status, 401, 'an expired token')
  t.equal((await post(publish, token('svc', ['service'], -3), good)).status, 401, 'no leeway beyond a second')
  const unsigned = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"svc","roles":["service"]}').toString('base64url')}.`
  t.equal((await post(publish, unsigned, good)).status, 401, 'an unsigned (alg none) token')
  t.equal((await post(publish, mintToken('another-secret', { sub: 'svc', roles: ['service'], ttlSeconds: 60 }), good)).status, 401, 'another secret')
  const forbidden = await post(publish, token('42'), good)
  t.equal(forbidden.status, 403, 'a user token')
  t.match(forbidden.body, { statusCode: 403, message: /service|admin/ })

  const svc = serviceToken()
  const badBodies: Array<[string, string, unknown, RegExp]> = [
    ['missing channel', '/realtime/publish', { type: 't', payload: {} }, /channel/],
    ['bad channel name', '/realtime/publish', { channel: 'room:a b', type: 't', payload: {} }, /channel/],
    ['payload a string', '/realtime/publish', { channel: 'product:1', type: 't', payload: 'x' }, /payload/],
    ['payload an array', '/realtime/publish', { channel: 'product:1', type: 't', payload: [1] }, /payload/],
    ['payload null', '/realtime/publish', { channel: 'product:1', type: 't', payload: null }, /payload/],
    ['missing type', '/realtime/publish', { channel: 'product:1', payload: {} }, /type/],
    ['channels too many', '/realtime/broadcast', { channels: Array.from({ length: 1001 }, (_, i) => `room:${i}`), type: 't', payload: {} }, /channels/],
    ['userIds over 1000', '/realtime/notify', { userIds: Array.from({ length: 1001 }, (_, i) => String(i)), payload: {} }, /userIds/],
    ['neither userId nor userIds', '/realtime/notify', { payload: {} }, /userId/],
    ['order without status', '/realtime/broadcast/order', { userId: '42', orderId: 'o' }, /status/],
    ['inventory stock not a number', '/realtime/broadcast/inventory', { productId: 1, stock: 'many' }, /stock/],
    ['test notification without message', '/realtime/test/notification', { userId: '42' }, /message/],
    ['not JSON', '/realtime/publish', '{"channel":', /JSON|body/i]
  ]
  for (const [what, route, body, field] of badBodies) {
    const res = await post(url + route, svc, body)
    t.equal(res.status, 400, `${what}: 400`)
    t.match(res.body, { statusCode: 400, error: 'Bad Request', message: field }, `${what}: names the field`)
  }

  const thousand = await post(`${url}/realtime/broadcast`, svc, { channels: Array.from({ length: 1000 }, (_, i) => `room:${i}`), type: 't', payload: {} })
  t.equal(thousand.status, 202, '1000 channels is within the limit')
  t.equal(Object.keys(thousand.body.positions).length, 1000)

  const tooLarge = await post(publish, svc, { ...good, payload: { blob: 'x'.repeat(20_000) } })
  t.equal(tooLarge.status, 413, 'above BODY_LIMIT_BYTES')
  t.match(tooLarge.body, { statusCode: 413 })

  const viaQuery = await post(`${publish}?token=${encodeURIComponent(mintToken(TEST_SECRET, { sub: 's', role: 'service', ttlSeconds: 60 }))}`, undefined, { ...good, channel: 'product:2' })
  t.equal(viaQuery.status, 202, 'a token in ?token=, with its role in the `role` claim')

  const ok = await post(publish, svc, { ...good, payload: { after: 'refusals' } })
  t.equal(ok.status, 202)
  t.match(await watcher.next((f) => f.channel === 'product:1'), { offset: 1, payload: { after: 'refusals' } }, 'the client still gets the next good event, and only it')
  await watcher.request({ type: 'system:ping' })
  t.same(watcher.events(), [])
})

t.test('429 with Retry-After past HTTP_RATE_LIMIT_PER_MINUTE, per token', async (t) => {
  const { url } = await startServer(t, { HTTP_RATE_LIMIT_PER_MINUTE: 3 })
  const body = { channel: 'product:1', type: 't', payload: {} }
  const svc = serviceToken()
  for (let i = 0; i < 3; i++) t.equal((await post(`${url}/realtime/publish`, svc, body)).status, 202)
  const limited = await post(`${url}/realtime/publish`, svc, body)
  t.equal(limited.status, 429)
  t.ok(Number(limited.headers.get('retry-after')) > 0, `Retry-After: ${limited.headers.get('retry-after')}`)
  t.match(limited.body, { statusCode: 429 })
  t.equal((await post(`${url}/realtime/publish`, token('svc-2', ['service']), body)).status, 202, 'another token has its own budget')
})

t.test('GET /realtime/stats counts live WS and SSE clients', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const a = await WsClient.connect(t, wsUrl, token('42'))
  await WsClient.connect(t, wsUrl, token('42'))
  await WsClient.connect(t, wsUrl, token('43'))
  await a.subscribe(['product:7'])
  const sse = await SseClient.open(t, `${url}/sse?channels=inventory&token=${token('42')}`)
  await sse.waitFor(1)
  const get = (bearer?: string) => fetch(`${url}/realtime/stats`, { headers: bearer === undefined ? {} : { authorization: `Bearer ${bearer}` } })

  const res = await get(serviceToken())
  t.equal(res.status, 200)
  const stats = await res.json() as Frame
  t.match(stats, { totalConnections: 4, uniqueUsers: 2, channels: 4 }, 'user:42, user:43, product:7, inventory')
  t.same(stats.userConnections.sort((x: Frame, y: Frame) => x.userId.localeCompare(y.userId)),
    [{ userId: '42', connectionCount: 3 }, { userId: '43', connectionCount: 1 }])
  t.equal(stats.nodes.length, 1)
  t.match(stats.nodes[0], { totalConnections: 4, connectionsByTransport: { ws: 3, sse: 1 } })
  t.equal((await get(adminToken())).status, 200, 'admin too')
  t.equal((await get()).status, 401)
  t.equal((await get('nope')).status, 401)
  t.equal((await get(token('42'))).status, 403)

  sse.close()
  a.close()
  await a.closed
  for (let i = 0; i < 50; i++) {
    const now = await (await get(serviceToken())).json() as Frame
    if (now.totalConnections === 2) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.match(await (await get(serviceToken())).json(), { totalConnections: 2, uniqueUsers: 2, channels: 2 }, 'closed clients leave the counts')
})

t.test('health, readiness, metrics, docs', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const health = await fetch(`${url}/health`)
  t.equal(health.status, 200)
  const body = await health.json() as Frame
  t.match(body, { status: 'ok', service: 'realtime-gateway', uptime: Number })
  t.ok(!Number.isNaN(Date.parse(body.timestamp)))
  t.equal((await fetch(`${url}/health/live`)).status, 200)
  t.equal((await fetch(`${url}/health`, { headers: { origin: 'https://any.example' } })).headers.get('access-control-allow-origin'), '*', 'CORS_ORIGIN defaults to *')
  for (const path of ['/health/ready', '/ready']) {
    const res = await fetch(url + path)
    t.equal(res.status, 200, `${path} with the memory broker`)
    t.match(await res.json(), { status: 'ready' })
  }

  const client = await WsClient.connect(t, wsUrl, token('42'))
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '42', type: 'metric:probe', payload: {} })
  await client.next((f) => f.type === 'metric:probe')
  const metrics = await fetch(`${url}/metrics`)
  t.equal(metrics.status, 200)
  const text = await metrics.text()
  t.match(text, /^gateway_connections\{transport="ws"\} 1$/m)
  t.match(text, /^gateway_messages_sent_total\{type="metric:probe"\} 1$/m)

  for (const page of ['/api/docs', '/api/docs/', '/api/docs/static/index.html']) {
    const docs = await fetch(`${url}${page}`)
    t.equal(docs.status, 200, page)
    if (page !== '/api/docs') t.match(docs.headers.get('content-type'), /html/)
    // Audit: no page may frame the docs (one could get a token pasted into them).
    t.match(docs.headers.get('content-security-policy'), /frame-ancestors 'none'/, `${page}: framing refused`)
    t.notMatch(docs.headers.get('content-security-policy'), /upgrade-insecure-requests/, 'and plain HTTP kept working')
    t.equal(docs.headers.get('x-frame-options'), 'DENY')
    t.equal(docs.headers.get('x-content-type-options'), 'nosniff')
  }
  t.equal((await fetch(`${url}/health`)).headers.get('content-security-policy'), null, 'the API\'s answers carry none of it')
  const openapi = await (await fetch(`${url}/api/docs/json`)).json() as Frame
  t.match(openapi, { openapi: /^3\./ })
  const statuses = (operation: Frame | undefined) => Object.keys(operation?.responses ?? {}).sort()
  for (const route of ['/realtime/publish', '/realtime/broadcast', '/realtime/notify', '/realtime/broadcast/order', '/realtime/broadcast/inventory', '/realtime/test/notification']) {
    t.ok(openapi.paths[route]?.post !== undefined, `the document lists POST ${route}`)
    t.same(statuses(openapi.paths[route]?.post), ['202', '400', '401', '403', '413', '415', '422', '429', '503'], `POST ${route}: every status, 422 (Idempotency-Key) included`)
    t.ok(openapi.paths[route]?.post?.parameters?.some((p: Frame) => p.in === 'header' && p.name === 'idempotency-key'), `POST ${route}: the Idempotency-Key header`)
  }
  for (const route of ['/realtime/disconnect', '/realtime/revoke']) {
    t.same(statuses(openapi.paths[route]?.post), ['202', '400', '401', '403', '413', '415', '429', '503'], `POST ${route}: every status`)
  }
  t.same(statuses(openapi.paths['/sse']?.get), ['200', '400', '401', '403', '503'], 'GET /sse: every status, 403 (channel or Origin) included')
  for (const route of ['/health', '/health/live', '/health/ready', '/ready', '/realtime/history/{channel}', '/realtime/presence/{channel}', '/realtime/stats']) {
    t.ok(openapi.paths[route]?.get !== undefined, `the document lists GET ${route}`)
  }
  t.same(statuses(openapi.paths['/ready']?.get), ['200', '503'], 'GET /ready: ready, or 503 naming what is not')
  t.same(statuses(openapi.paths['/realtime/stats']?.get), ['200', '401', '403', '429', '503'], 'GET /realtime/stats: every status')
  for (const route of ['/realtime/history/{channel}', '/realtime/presence/{channel}']) {
    t.same(statuses(openapi.paths[route]?.get), ['200', '400', '401', '403', '429', '503'], `GET ${route}: every status`)
  }
})

t.test('a path under the wrong method is a 405 naming the right ones; an unknown path a 404; a plain GET on /ws a 426', async (t) => {
  const { url } = await startServer(t)
  const cases: Array<[string, string, string]> = [
    ['DELETE', '/realtime/broadcast', 'POST'],
    ['GET', '/realtime/publish', 'POST'],
    ['POST', '/health', 'GET, HEAD'],
    ['PUT', '/realtime/history/product:7', 'GET, HEAD']
  ]
  for (const [method, path, allow] of cases) {
    const res = await fetch(url + path, { method })
    t.equal(res.status, 405, `${method} ${path}`)
    t.equal(res.headers.get('allow'), allow, `${method} ${path}: Allow names what the path takes`)
    t.match(await res.json(), { statusCode: 405, error: 'Method Not Allowed', message: `${method} is not allowed on ${path}` })
  }
  const unknown = await fetch(`${url}/realtime/nope`, { method: 'POST' })
  t.equal(unknown.status, 404)
  t.equal(unknown.headers.get('allow'), null)
  t.match(await unknown.json(), { statusCode: 404, message: 'no route for POST /realtime/nope' })

  // Audit: a proxy that drops the Upgrade header got an empty 404, held back as long as an upgrade's 101.
  t.equal((await fetch(`${url}/ws`)).status, 401, 'no token: refused before anything else')
  const plain = await fetch(`${url}/ws`, { headers: { authorization: `Bearer ${token('42')}` } })
  t.equal(plain.status, 426)
  t.equal(plain.headers.get('upgrade'), 'websocket')
  t.match(await plain.json(), { statusCode: 426, error: 'Upgrade Required', message: /send Upgrade: websocket/ })
})

t.test('CORS: only the configured origin', async (t) => {
  const { url } = await startServer(t, { CORS_ORIGIN: 'https://shop.example' })
  const preflight = (origin: string) => fetch(`${url}/realtime/publish`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' }
  })
  const allowed = await preflight('https://shop.example')
  t.ok(allowed.status < 300, `preflight ${allowed.status}`)
  t.equal(allowed.headers.get('access-control-allow-origin'), 'https://shop.example')
  t.equal((await preflight('https://evil.example')).headers.get('access-control-allow-origin'), null)

  const get = (origin: string) => fetch(`${url}/health`, { headers: { origin } })
  t.equal((await get('https://shop.example')).headers.get('access-control-allow-origin'), 'https://shop.example')
  t.equal((await get('https://evil.example')).headers.get('access-control-allow-origin'), null)
  // A cross-origin publisher can read whether its retry was replayed, and when to come back after a 429.
  const exposed = ((await get('https://shop.example')).headers.get('access-control-expose-headers') ?? '').toLowerCase()
  for (const header of ['idempotent-replayed', 'retry-after', 'x-ratelimit-remaining']) t.match(exposed, header, `${header} is exposed`)

  const sse = await SseClient.open(t, `${url}/sse?token=${token('42')}`, { origin: 'https://shop.example' })
  t.equal(sse.headers.get('access-control-allow-origin'), 'https://shop.example', 'the event stream too')
})

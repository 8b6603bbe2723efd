import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { mintToken } from '../../lib/auth/token.js'
import { adminToken, post, serviceToken, sleep, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'

/** The connection still answers after an error: errors never kill it (docs/protocol.md, WebSocket). */
async function stillWorks (t: Test, client: WsClient, what: string): Promise<void> {
  const pong = await client.request({ type: 'system:ping', id: `alive-${what}` })
  t.equal(pong.type, 'system:pong', `still open after ${what}`)
}

const publish = (url: string, channel: string, payload: Record<string, unknown> = {}) =>
  post(`${url}/realtime/publish`, serviceToken(), { channel, type: 'test:event', payload })

t.test('greeting and ping: shapes, ids echoed', async (t) => {
  const { wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  t.same(Object.keys(alice.greeting).sort(), ['payload', 'type'])
  t.same(Object.keys(alice.greeting.payload).sort(), ['channels', 'connectionId', 'heartbeatMs', 'roles', 'userId'])
  t.match(alice.greeting.payload, { userId: '42', roles: [], channels: ['user:42'], heartbeatMs: 25000 })
  const admin = await WsClient.connect(t, wsUrl, adminToken('7'))
  t.same(admin.greeting.payload.roles, ['admin'])
  t.not(admin.greeting.payload.connectionId, alice.greeting.payload.connectionId)

  // A frame sent the moment the socket opens is answered after the greeting.
  const raw = new WebSocket(`${wsUrl}?token=${token('42')}`)
  t.teardown(() => raw.terminate())
  const order: string[] = []
  raw.on('open', () => raw.send(JSON.stringify({ type: 'system:ping', id: 'early' })))
  raw.on('message', (data) => order.push(JSON.parse(data.toString()).type))
  for (const deadline = Date.now() + 5000; order.length < 2 && Date.now() < deadline;) await sleep(10)
  t.same(order, ['system:connected', 'system:pong'], 'the greeting is always the first frame')

  const pong = await alice.request({ type: 'system:ping', id: 'p1' })
  t.same(Object.keys(pong).sort(), ['id', 'payload', 'type'])
  t.match(pong, { type: 'system:pong', id: 'p1', payload: { ts: Number } })
  t.equal((await alice.request({ type: 'system:ping', id: 7 })).id, 7, 'numeric ids too')
  alice.send({ type: 'system:ping' })
  const bare = await alice.next((f) => f.type === 'system:pong')
  t.equal(bare.id, undefined, 'no id, none echoed')
})

t.test('subscribe / unsubscribe: acknowledgements with positions', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  await publish(url, 'product:7')
  const receipt = await publish(url, 'product:7')
  const epoch = receipt.body.positions['product:7'].epoch

  const ack = await alice.request({ type: 'subscribe', id: 's1', payload: { channels: ['product:7', 'event:1'] } })
  t.match(ack, { type: 'subscribed', id: 's1', payload: { channels: ['product:7', 'event:1'], recovered: {} } })
  t.same(ack.payload.positions['product:7'], { offset: 2, epoch }, 'offset of the last event, in its epoch')
  t.match(ack.payload.positions['event:1'], { offset: 0, epoch: String }, '0 when none yet')

  await publish(url, 'product:7', { n: 3 })
  t.match(await alice.next((f) => f.channel === 'product:7'), { type: 'test:event', offset: 3, payload: { n: 3 } })

  const unack = await alice.request({ type: 'unsubscribe', id: 'u1', payload: { channels: ['product:7'] } })
  t.same(unack, { type: 'unsubscribed', id: 'u1', payload: { channels: ['product:7'] } })
  await publish(url, 'product:7')
  await publish(url, 'event:1', { still: true })
  t.match(await alice.next((f) => f.channel === 'event:1'), { payload: { still: true } }, 'the other channel still flows')
  await stillWorks(t, alice, 'unsubscribe')
  t.same(alice.events('product:7'), [], 'nothing after unsubscribe')
})

t.test('a channel named twice in one frame is one channel: answered once, its events once', async (t) => {
  // Audit: the answer listed a channel as often as the frame named it (200 times).
  const { url, wsUrl } = await startServer(t)
  const bob = await WsClient.connect(t, wsUrl, token('43'))
  const twice = Array.from({ length: 200 }, () => 'room:dup')
  const ack = await bob.request({ type: 'subscribe', id: 'd1', payload: { channels: [...twice, 'room:other', 'room:dup'] } })
  t.same(ack.payload.channels, ['room:dup', 'room:other'])
  t.same(Object.keys(ack.payload.positions), ['room:dup', 'room:other'])
  await publish(url, 'room:dup', { n: 1 })
  await publish(url, 'room:other', { n: 1 })
  t.match(await bob.next((f) => f.channel === 'room:dup'), { offset: 1, payload: { n: 1 } })
  await bob.next((f) => f.channel === 'room:other')
  t.same(bob.events('room:dup'), [], 'delivered once')
  const unack = await bob.request({ type: 'unsubscribe', id: 'd2', payload: { channels: ['room:dup', 'room:dup'] } })
  t.same(unack.payload.channels, ['room:dup'])
})

t.test('room:join / room:leave are subscribe / unsubscribe of the room channel', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  for (const room of ['event:9', 'room:x']) {
    const joined = await alice.request({ type: 'room:join', id: `j-${room}`, payload: { room } })
    t.match(joined, { type: 'subscribed', id: `j-${room}`, payload: { channels: [room], positions: { [room]: { offset: 0, epoch: String } } } })
    await publish(url, room, { room })
    t.match(await alice.next((f) => f.channel === room), { offset: 1, payload: { room } })
    const left = await alice.request({ type: 'room:leave', id: `l-${room}`, payload: { room } })
    t.same(left, { type: 'unsubscribed', id: `l-${room}`, payload: { channels: [room] } })
    await publish(url, room)
  }
  await stillWorks(t, alice, 'room:leave')
  t.same(alice.events(), [], 'nothing after leaving')
  t.match(await alice.request({ type: 'room:join', id: 'j3', payload: { room: 'admin' } }), { type: 'error', payload: { code: 'forbidden' } })
  t.match(await alice.request({ type: 'room:join', id: 'j4', payload: { room: 'a b' } }), { type: 'error', payload: { code: 'bad_request' } })
})

t.test('subscribe:admin: an admin gets the admin channel, a user is refused and stays connected', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const admin = await WsClient.connect(t, wsUrl, adminToken())
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  t.match(await admin.request({ type: 'subscribe:admin', id: 'a1' }),
    { type: 'subscribed', id: 'a1', payload: { channels: ['admin'], positions: { admin: { offset: 0 } } } })
  const byRoleClaim = await WsClient.connect(t, wsUrl, mintToken(TEST_SECRET, { sub: 'boss', role: 'admin', ttlSeconds: 60 }))
  t.match(await byRoleClaim.request({ type: 'subscribe:admin' }), { type: 'subscribed' }, 'the role may come in the `role` claim')
  const refused = await alice.request({ type: 'subscribe:admin', id: 'a2' })
  t.match(refused, { type: 'error', id: 'a2', payload: { code: 'forbidden', message: String } })
  await publish(url, 'admin', { secret: 1 })
  t.match(await admin.next((f) => f.channel === 'admin'), { payload: { secret: 1 } })
  await stillWorks(t, alice, 'forbidden')
  t.same(alice.events(), [])
})

t.test('subscribe:orders: acknowledged for a user; an admin gets every order', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const admin = await WsClient.connect(t, wsUrl, adminToken())
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const ack = await alice.request({ type: 'subscribe:orders', id: 'o1' })
  t.match(ack, { type: 'subscribed', id: 'o1' })
  t.notOk(ack.payload.channels.includes('orders'), 'a user does not get the orders channel')
  t.match(await admin.request({ type: 'subscribe:orders', id: 'o2' }), { type: 'subscribed', id: 'o2', payload: { channels: ['orders'] } })

  const res = await post(`${url}/realtime/broadcast/order`, serviceToken(), { userId: '42', orderId: 'A-1', status: 'shipped' })
  t.equal(res.status, 202)
  t.match(await alice.next((f) => f.type === 'order:updated'), { channel: 'user:42', payload: { orderId: 'A-1' } }, "the user's order on user:42")
  t.match(await admin.next((f) => f.channel === 'orders'), { type: 'admin:order:updated', payload: { orderId: 'A-1', status: 'shipped' } })
  await stillWorks(t, alice, 'orders')
  t.same(alice.events().filter((e) => e.channel !== 'user:42'), [])
})

t.test('request:stats: the admin gets GET /realtime/stats, a user is refused', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const admin = await WsClient.connect(t, wsUrl, adminToken())
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const stats = await admin.request({ type: 'request:stats', id: 'st' })
  t.match(stats, { type: 'stats', id: 'st', payload: { totalConnections: 2, uniqueUsers: 2, channels: 2 } })
  const http = await (await fetch(`${url}/realtime/stats`, { headers: { authorization: `Bearer ${adminToken()}` } })).json() as Record<string, unknown>
  t.same(Object.keys(stats.payload).sort(), Object.keys(http).sort(), 'same shape as the HTTP route')
  t.same(Object.keys(http).sort(), ['channels', 'nodes', 'totalConnections', 'uniqueUsers', 'userConnections'])
  t.same(stats.payload.userConnections.sort((a: any, b: any) => a.userId.localeCompare(b.userId)),
    [{ userId: '42', connectionCount: 1 }, { userId: 'admin-1', connectionCount: 1 }])
  t.match(await alice.request({ type: 'request:stats', id: 'st2' }), { type: 'error', id: 'st2', payload: { code: 'forbidden' } })
  await stillWorks(t, alice, 'stats refusal')
})

t.test('auth:refresh: same user → auth:refreshed and a longer life; anything else → forbidden', async (t) => {
  const { wsUrl } = await startServer(t)
  // Tokens that expire about a second from now: one refreshed, one left to expire.
  const refreshed = await WsClient.connect(t, wsUrl, token('42', [], 1))
  const control = await WsClient.connect(t, wsUrl, token('42', [], 1))
  t.same(await refreshed.request({ type: 'auth:refresh', id: 'r1', payload: { token: token('42', [], 3600) } }),
    { type: 'auth:refreshed', id: 'r1' })
  for (const [what, bad] of [['another user', token('43')], ['a bad token', 'not-a-jwt'], ['an expired token', token('42', [], -10)]]) {
    t.match(await refreshed.request({ type: 'auth:refresh', id: 'r2', payload: { token: bad } }),
      { type: 'error', id: 'r2', payload: { code: 'forbidden' } }, `refused: ${what}`)
  }
  const closed = await control.closed
  t.equal(closed.code, 4001, 'the connection that did not refresh is closed when its token expires')
  await sleep(300)
  await stillWorks(t, refreshed, 'the old expiry')
})

t.test('every bad frame answers an error and the connection goes on', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const badRequests: Array<[string, unknown, RegExp?]> = [
    ['malformed JSON', '{"type":'],
    ['an array', '[1,2]'],
    ['a string', '"system:ping"'],
    ['null', 'null'],
    ['a number', '42'],
    ['a missing type', { id: 'x' }, /type/],
    ['an unknown type', { type: 'nope', id: 'x' }, /nope/],
    ['a subscribe without payload', { type: 'subscribe', id: 'x' }, /payload/],
    ['a subscribe without channels', { type: 'subscribe', id: 'x', payload: {} }, /channels/],
    ['channels not an array', { type: 'subscribe', id: 'x', payload: { channels: 'product:1' } }, /channels/],
    ['an empty channel list', { type: 'subscribe', id: 'x', payload: { channels: [] } }, /channels/],
    ['a channel with a space', { type: 'subscribe', id: 'x', payload: { channels: ['product:1', 'room:a b'] } }, /channels/],
    ['a channel with #', { type: 'subscribe', id: 'x', payload: { channels: ['room:#1'] } }],
    ['a 201-character channel', { type: 'subscribe', id: 'x', payload: { channels: ['r'.repeat(201)] } }],
    ['an empty channel', { type: 'unsubscribe', id: 'x', payload: { channels: [''] } }],
    ['a bad since', { type: 'subscribe', id: 'x', payload: { channels: ['product:1'], since: { 'product:1': { offset: -1 } } } }, /since/],
    ['a since past any offset', { type: 'subscribe', id: 'x', payload: { channels: ['product:1'], since: { 'product:1': { offset: 1e300 } } } }, /since/],
    ['a since past a safe integer', '{"type":"subscribe","id":"x","payload":{"channels":["product:1"],"since":{"product:1":{"offset":9007199254740993}}}}', /since/],
    ['a room:join without room', { type: 'room:join', id: 'x', payload: {} }, /room/],
    ['an auth:refresh without token', { type: 'auth:refresh', id: 'x', payload: {} }, /token/]
  ]
  for (const [what, frame, message] of badRequests) {
    const withId = typeof frame === 'object'
    alice.send(frame)
    const error = await alice.next((f) => f.type === 'error')
    t.equal(error.payload.code, 'bad_request', `${what}: bad_request`)
    if (withId) t.equal(error.id, 'x', `${what}: id echoed`)
    if (message !== undefined) t.match(error.payload.message, message, `${what}: names the field`)
    await stillWorks(t, alice, what)
  }
  alice.socket.send(Buffer.from('{"type":"system:ping"}'), { binary: true })
  t.equal((await alice.next((f) => f.type === 'error')).payload.code, 'bad_request', 'binary frames are refused')

  const forbidden = ['user:43', 'admin', 'orders', 'secret:1', 'users', 'product:', 'admin:x']
  for (const channel of forbidden) {
    const error = await alice.request({ type: 'subscribe', id: 'f', payload: { channels: [channel] } })
    t.match(error, { type: 'error', id: 'f', payload: { code: 'forbidden' } }, `${channel}: forbidden`)
    await stillWorks(t, alice, channel)
  }
  const mixed = await alice.request({ type: 'subscribe', id: 'm', payload: { channels: ['product:1', 'user:43'] } })
  t.match(mixed, { payload: { code: 'forbidden' } }, 'one forbidden channel refuses the frame')
  await publish(url, 'product:1')
  await stillWorks(t, alice, 'mixed')
  t.same(alice.events(), [], '…and none of its channels was joined')
  t.same(alice.frames.filter((f) => f.type === 'error'), [], 'no stray errors')
})

t.test('too_many_channels past MAX_CHANNELS_PER_CONNECTION', async (t) => {
  const { url, wsUrl } = await startServer(t, { MAX_CHANNELS_PER_CONNECTION: 3 })
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  t.match(await alice.subscribe(['product:1', 'product:2']), { type: 'subscribed' }, 'user:42 + 2 = 3')
  t.match(await alice.subscribe(['product:1']), { type: 'subscribed' }, 'a channel already held does not count twice')
  const error = await alice.request({ type: 'subscribe', id: 't1', payload: { channels: ['product:3'] } })
  t.match(error, { type: 'error', id: 't1', payload: { code: 'too_many_channels' } })
  await stillWorks(t, alice, 'too_many_channels')
  await alice.request({ type: 'unsubscribe', payload: { channels: ['product:2'] } })
  t.match(await alice.request({ type: 'room:join', id: 't2', payload: { room: 'product:3' } }), { type: 'subscribed' }, 'room again after leaving one')
  t.match(await alice.subscribe(['product:4']), { payload: { code: 'too_many_channels' } })
  await publish(url, 'product:4')
  await publish(url, 'product:3', { ok: true })
  t.match(await alice.next((f) => f.channel === 'product:3'), { payload: { ok: true } })
  await stillWorks(t, alice, 'the second refusal')
  t.same(alice.events('product:4'), [], 'the refused channel was not joined')
})

t.test('rate_limited frames answer an error; the connection recovers', async (t) => {
  const { wsUrl } = await startServer(t, { WS_RATE_LIMIT_PER_SECOND: 2, WS_RATE_LIMIT_BURST: 3 })
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  for (let i = 0; i < 6; i++) alice.send({ type: 'system:ping', id: `burst-${i}` })
  alice.send('{"type":"system:ping","id":') // in the same burst: refused unread
  const limited = await alice.next((f) => f.type === 'error')
  t.equal(limited.payload.code, 'rate_limited')
  t.match(limited.id, /^burst-[3-5]$/, 'the refusal names the refused request')
  t.match(await alice.next((f) => f.type === 'error' && f.id === undefined), { payload: { code: 'rate_limited' } }, 'one without a readable id is refused too')
  await sleep(1100)
  await stillWorks(t, alice, 'rate_limited')
  t.ok(alice.frames.filter((f) => f.type === 'system:pong').length <= 4, 'the burst was cut')
})

t.test('anonymous clients', async (t) => {
  t.test('with ALLOW_ANONYMOUS=true: public channels only', async (t) => {
    const { url, wsUrl } = await startServer(t, { ALLOW_ANONYMOUS: true })
    const anon = await WsClient.connect(t, wsUrl)
    t.match(anon.greeting.payload, { userId: null, roles: [], channels: [] })
    t.match(await anon.subscribe(['product:1']), { type: 'subscribed', payload: { channels: ['product:1'] } })
    await publish(url, 'product:1', { public: true })
    t.match(await anon.next((f) => f.channel === 'product:1'), { payload: { public: true } })
    t.match(await anon.subscribe(['user:1']), { type: 'error', payload: { code: 'forbidden' } })
    t.match(await anon.request({ type: 'subscribe:admin' }), { type: 'error', payload: { code: 'forbidden' } })
    await stillWorks(t, anon, 'forbidden')
    await t.rejects(WsClient.connect(t, wsUrl, 'not-a-jwt'), { message: 'HTTP 401' }, 'a bad token is still refused')
  })
  t.test('without it: 401', async (t) => {
    const { wsUrl } = await startServer(t, { ALLOW_ANONYMOUS: false })
    await t.rejects(WsClient.connect(t, wsUrl), { message: 'HTTP 401' })
  })
})

import t from 'tap'
import { canSubscribe, defaultChannels, isValidChannelName } from '../../lib/auth/channels.js'
import {
  broadcastEvents, inventoryEvents, MissingFieldError, notificationEvents, notifyEvents, orderEvents, productEvents
} from '../../lib/ingress/commerce-events.js'
import { ANONYMOUS, canPublish, type Identity, identityFromClaims, InvalidClaimsError, isAdmin, requireIdentity } from '../../lib/auth/identity.js'
import { decodeCursor, encodeCursor } from '../../lib/transport/sse-cursor.js'
import { fullBucket, takeToken } from '../../lib/transport/token-bucket.js'

const thrown = (fn: () => unknown): unknown => { try { fn() } catch (err) { return err } }
const user = (id: string, roles: string[] = []): Identity => ({ userId: id, roles })

t.test('channel names: 1–200 characters of [A-Za-z0-9_\\-:.@]', async (t) => {
  for (const ok of ['a', 'x'.repeat(200), 'user:42', 'product:sku-1', 'room:a.b_c-d@e', 'A:Z:0:9']) {
    t.ok(isValidChannelName(ok), `${ok.slice(0, 20)} (${ok.length}) is valid`)
  }
  for (const bad of ['', 'x'.repeat(201), 'room:a b', 'room:#1', 'room:é', 'a/b', 'a,b', 'a;b', 'a\n', 42, null, undefined, ['a']]) {
    t.notOk(isValidChannelName(bad), `${JSON.stringify(bad)} is refused`)
  }
})

t.test('who may subscribe (docs/protocol.md, Channels)', async (t) => {
  const alice = user('42')
  const admin = user('1', ['admin'])
  const service = user('svc', ['service'])
  const table: Array<[string, Identity, boolean]> = [
    ['user:42', alice, true],
    ['user:43', alice, false],
    ['user:4', alice, false],
    ['user:420', alice, false],
    ['user:42', admin, false],
    ['user:42', ANONYMOUS, false],
    ['user:', alice, false],
    ['admin', admin, true],
    ['admin', alice, false],
    ['admin', service, false],
    ['admin', ANONYMOUS, false],
    ['orders', admin, true],
    ['orders', alice, false],
    ['orders', service, false],
    ['orders', ANONYMOUS, false]
  ]
  for (const channel of ['inventory', 'products', 'product:7', 'product:sku-1', 'event:9', 'room:lobby']) {
    for (const who of [alice, admin, service, ANONYMOUS]) table.push([channel, who, true])
  }
  for (const channel of ['product:', 'event:', 'room:', 'admins', 'admin:x', 'orders:1', 'secret:1', 'users', 'inventory:1', 'productx']) {
    table.push([channel, admin, false], [channel, alice, false])
  }
  for (const [channel, who, allowed] of table) {
    t.equal(canSubscribe(who, channel), allowed, `${who.userId ?? 'anonymous'} [${who.roles.join(',')}] ${allowed ? 'may' : 'may not'} read ${channel}`)
  }
  t.same(defaultChannels(alice), ['user:42'], 'an authenticated connection holds its own user channel')
  t.same(defaultChannels(ANONYMOUS), [])
})

t.test('identity: roles from `roles` (array) or `role` (string)', async (t) => {
  t.same(identityFromClaims({ sub: '42', roles: ['admin'] }), { userId: '42', roles: ['admin'], exp: undefined })
  t.same(identityFromClaims({ sub: '42', role: 'service', exp: 99 }), { userId: '42', roles: ['service'], exp: 99 })
  t.same(identityFromClaims({ sub: '42', roles: ['admin', 'admin', 3, ''], role: 'service' }).roles, ['admin', 'service'])
  t.same(identityFromClaims({ sub: '42', roles: 'admin' }).roles, [], 'a string in `roles` is not an array of roles')
  t.same(identityFromClaims({ sub: 7 }).userId, '7', 'a numeric sub')
  t.equal(identityFromClaims({}).userId, null)
  t.equal(identityFromClaims({ sub: '' }).userId, null, 'an empty sub names no user')
  for (const sub of [true, {}, [1], null]) {
    t.throws(() => identityFromClaims({ sub }), InvalidClaimsError, `sub ${JSON.stringify(sub)}: refused, not taken for no user`)
  }
  t.ok(isAdmin(identityFromClaims({ sub: 'a', role: 'admin' })))
  t.notOk(isAdmin(identityFromClaims({ sub: 'a', role: 'service' })))
  t.ok(canPublish(identityFromClaims({ sub: 'a', role: 'service' })))
  t.ok(canPublish(identityFromClaims({ sub: 'a', roles: ['admin'] })))
  t.notOk(canPublish(identityFromClaims({ sub: 'a', roles: ['user'] })))
})

t.test('requireIdentity: the identity an auth hook set; none is a wiring error, never anyone', async (t) => {
  const alice = user('alice')
  t.equal(requireIdentity(alice), alice)
  t.equal(requireIdentity(ANONYMOUS), ANONYMOUS)
  t.throws(() => requireIdentity(null), /no identity/)
})

t.test('order events: the buyer, the admins and every-order watchers', async (t) => {
  for (const change of ['created', 'updated', 'cancelled'] as const) {
    const drafts = orderEvents(change, { orderId: 'o1', buyerId: 42, status: 'paid' })
    t.same(drafts.map((d) => [d.channel, d.type]), [
      ['user:42', `order:${change}`], ['admin', `admin:order:${change}`], ['orders', `admin:order:${change}`]
    ])
    t.match(drafts[0].payload, { orderId: 'o1', userId: '42', status: 'paid' })
    t.notOk('buyerId' in drafts[0].payload)
  }
  t.equal(orderEvents('updated', { orderId: 1, userId: '7' })[0].channel, 'user:7', 'userId names the buyer too')
  t.equal(orderEvents('updated', { orderId: 1, buyerId: 'b', userId: 'u' })[0].channel, 'user:b', 'buyerId first')
  t.throws(() => orderEvents('created', { orderId: 1 }), { field: 'buyerId', code: 'bad_request' })
  t.ok(thrown(() => orderEvents('created', { orderId: 1 })) instanceof MissingFieldError)
})

t.test('inventory events and the low-stock alert (threshold 5)', async (t) => {
  const alerts = (stock: number, previousStock?: number) =>
    inventoryEvents({ productId: 'p1', stock, previousStock }, 5).filter((d) => d.type === 'admin:alert').length
  const drafts = inventoryEvents({ productId: 'p1', stock: 50, previousStock: 60, sku: 'S' }, 5)
  t.same(drafts.map((d) => [d.channel, d.type]), [
    ['product:p1', 'inventory:updated'], ['inventory', 'inventory:updated'], ['admin', 'admin:inventory:updated']
  ])
  t.match(drafts[0].payload, { productId: 'p1', stock: 50, previousStock: 60, sku: 'S' })
  t.equal(alerts(3, 10), 1, 'crossing from above')
  t.equal(alerts(5, 6), 1, 'arriving exactly at the threshold')
  t.equal(alerts(0, 100), 1)
  t.equal(alerts(3), 1, 'at or below with no previous figure')
  t.equal(alerts(3, 4), 0, 'already below: no repeat')
  t.equal(alerts(4, 5), 0, 'previous exactly at the threshold was not above it')
  t.equal(alerts(6, 10), 0, 'above the threshold')
  t.equal(alerts(6), 0)
  t.equal(alerts(10, 3), 0, 'restocking')
  const [alert] = inventoryEvents({ productId: 9, stock: 1, previousStock: 8, productName: 'Mug' }, 5).filter((d) => d.type === 'admin:alert')
  t.equal(alert.channel, 'admin')
  t.match(alert.payload, { productId: 9, stock: 1, previousStock: 8, threshold: 5, productName: 'Mug' })
})

t.test('product, notification, notify and broadcast mappings', async (t) => {
  t.same(productEvents('created', { productId: 7 }).map((d) => [d.channel, d.type]),
    [['products', 'product:created'], ['product:7', 'product:created']])
  t.same(productEvents('updated', { productId: 'sku-1' }).map((d) => d.type), ['product:updated', 'product:updated'])

  const [note] = notificationEvents({ userId: 42, title: 'Hi', message: 'there' })
  t.same(note, { channel: 'user:42', type: 'notification', payload: { userId: '42', title: 'Hi', message: 'there' } })

  const payload = { text: 'sale' }
  t.same(notifyEvents({ userId: '42', payload }), [{ channel: 'user:42', type: 'notification', payload }], 'type defaults to notification')
  t.same(notifyEvents({ userIds: ['1', 1, '2'], userId: 2, type: 'promo', payload }).map((d) => [d.channel, d.type]),
    [['user:1', 'promo'], ['user:2', 'promo']], 'each user once, "1" and 1 being the same user')
  t.throws(() => notifyEvents({ payload }), { field: 'userId', code: 'bad_request' })
  t.ok(thrown(() => notifyEvents({ payload })) instanceof MissingFieldError)
  t.same(broadcastEvents({ channels: ['a', 'b', 'a'], type: 't', payload }).map((d) => d.channel), ['a', 'b'])
})

t.test('SSE cursor: round trip, garbage is null', async (t) => {
  const positions = new Map([['user:42', { offset: 3, epoch: 'e1' }], ['product:7', { offset: 0, epoch: 'x_y-z' }]])
  const cursor = encodeCursor(positions)
  t.type(cursor, 'string')
  t.same([...(decodeCursor(cursor) ?? [])], [...positions])
  t.same([...(decodeCursor(encodeCursor(new Map())) ?? new Map([['x', 1]]))], [], 'no channels')
  for (const garbage of ['', 'garbage', '42', 'v2;a,e,1', 'v1;a,e', 'v1;a,e,-1', 'v1;a,e,1.5', 'v1;a,e,x', 'v1;,e,1', 'v1;a,e,1;', `v1;${'a,e,1;'.repeat(20_000)}a,e,1`]) {
    t.equal(decodeCursor(garbage), null, `${JSON.stringify(garbage.slice(0, 30))} is not a cursor`)
  }
})

t.test('token bucket: a burst, then the rate', async (t) => {
  const state = fullBucket(3, 0)
  const bucket = { take: (now: number) => takeToken(state, 2, 3, now) }
  t.same([bucket.take(0), bucket.take(0), bucket.take(0), bucket.take(0)], [true, true, true, false], 'burst of 3')
  t.equal(bucket.take(250), false, 'half a token after 250 ms at 2/s')
  t.equal(bucket.take(500), true, 'one token after 500 ms')
  t.equal(bucket.take(500), false)
  t.same([bucket.take(60_000), bucket.take(60_000), bucket.take(60_000), bucket.take(60_000)], [true, true, true, false], 'refill is capped at the burst')
  t.equal(bucket.take(59_000), false, 'a clock going backwards adds nothing')
})

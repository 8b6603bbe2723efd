import t, { type Test } from 'tap'
import { adminToken, post, requireService, serviceToken, SseClient, startServer, token, WsClient } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

const available = await redisAvailable()

/** Two gateway instances (separate apps, each with its own Redis connections) on one Redis. */
async function twoInstances (t: Test) {
  const prefix = uniquePrefix('cluster')
  await redisClient(t, prefix) // deletes the prefix's keys when the test ends
  const a = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, NODE_ID: 'node-a' })
  const b = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, NODE_ID: 'node-b' })
  return { a, b }
}

const publish = (url: string, channel: string, n: number) =>
  post(`${url}/realtime/publish`, serviceToken(), { channel, type: 'test:event', payload: { n } })

async function nextEvents (client: WsClient, channel: string, count: number) {
  const events = []
  for (let i = 0; i < count; i++) events.push(await client.next((f) => f.channel === channel))
  return events
}

async function stats (url: string) {
  const res = await fetch(`${url}/realtime/stats`, { headers: { authorization: `Bearer ${adminToken()}` } })
  return { status: res.status, body: await res.json() as any }
}

t.test('a publish through either instance reaches clients on both, once each, with the same offsets', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { a, b } = await twoInstances(t)
  const onA = await WsClient.connect(t, a.wsUrl, token('1'))
  const onB = await WsClient.connect(t, b.wsUrl, token('2'))
  await onA.subscribe(['product:7'])
  await onB.subscribe(['product:7'])

  const receipts = []
  for (let n = 1; n <= 6; n++) {
    const res = await publish((n % 2 === 1 ? a : b).url, 'product:7', n)
    t.equal(res.status, 202)
    receipts.push(res.body.positions['product:7'])
  }
  t.same(receipts.map((p: any) => p.offset), [1, 2, 3, 4, 5, 6], 'one offset sequence over both instances')
  t.equal(new Set(receipts.map((p: any) => p.epoch)).size, 1)

  for (const [name, client] of [['A', onA], ['B', onB]] as const) {
    const events = await nextEvents(client, 'product:7', 6)
    t.same(events.map((e) => [e.offset, e.payload.n]), [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6]], `client on ${name}: in order`)
  }
  // Events of a channel arrive in offset order, so a duplicate would show up before this one.
  await publish(a.url, 'product:7', 7)
  for (const client of [onA, onB]) {
    t.match(await client.next((f) => f.channel === 'product:7'), { offset: 7 })
    t.same(client.events('product:7'), [], 'nothing twice')
  }
})

t.test('notify reaches a user connected to both instances; nobody else', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { a, b } = await twoInstances(t)
  const aliceOnA = await WsClient.connect(t, a.wsUrl, token('42'))
  const aliceOnB = await WsClient.connect(t, b.wsUrl, token('42'))
  const bobOnB = await WsClient.connect(t, b.wsUrl, token('43'))
  const res = await post(`${a.url}/realtime/notify`, serviceToken(), { userId: '42', payload: { text: 'hi' } })
  t.equal(res.status, 202)
  for (const client of [aliceOnA, aliceOnB]) {
    t.match(await client.next((f) => f.type === 'notification'), { channel: 'user:42', offset: 1, payload: { text: 'hi' } })
  }
  await bobOnB.request({ type: 'system:ping' })
  t.same(bobOnB.events(), [], 'bob got nothing')
})

t.test('/realtime/stats on either instance sums both; a closed instance drops out', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { a, b } = await twoInstances(t)
  await WsClient.connect(t, a.wsUrl, token('1'))
  await WsClient.connect(t, a.wsUrl, token('1'))
  await WsClient.connect(t, b.wsUrl, token('1'))
  const onB = await WsClient.connect(t, b.wsUrl, token('2'))
  const sse = await SseClient.open(t, `${b.url}/sse?channels=product:1&token=${token('3')}`)
  await sse.waitFor(1, (e) => e.event === 'system:connected')

  // Another instance's figures are at most one heartbeat (2 s) old.
  const expected = (s: any) => s.totalConnections === 5 && s.uniqueUsers === 3
  for (const instance of [a, b]) {
    let last: any
    await eventually('stats of both instances', async () => expected(last = (await stats(instance.url)).body))
    t.same(last.nodes.map((n: any) => n.nodeId), ['node-a', 'node-b'])
    t.same(last.nodes.map((n: any) => n.totalConnections), [2, 3])
    t.same(last.userConnections.sort((x: any, y: any) => x.userId.localeCompare(y.userId)),
      [{ userId: '1', connectionCount: 3 }, { userId: '2', connectionCount: 1 }, { userId: '3', connectionCount: 1 }])
    t.equal(last.channels, 4, 'distinct channels over both: user:1, user:2, user:3, product:1')
  }

  onB.close()
  await eventually('a closed connection leaves the sum', async () => (await stats(a.url)).body.totalConnections === 4)
  await b.app.close()
  const after = (await stats(a.url)).body
  t.same(after.nodes.map((n: any) => n.nodeId), ['node-a'], 'a cleanly closed instance leaves at once')
  t.equal(after.totalConnections, 2)
})

t.test('WebSocket recovery on instance B of events published through A', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { a, b } = await twoInstances(t)
  let epoch = ''
  for (let n = 1; n <= 3; n++) epoch = (await publish(a.url, 'product:9', n)).body.positions['product:9'].epoch

  const client = await WsClient.connect(t, b.wsUrl, token('5'))
  const ack = await client.subscribe(['product:9'], { 'product:9': { offset: 1, epoch } })
  t.match(ack.payload, { positions: { 'product:9': { offset: 3, epoch } }, recovered: { 'product:9': true } })
  t.same((await nextEvents(client, 'product:9', 2)).map((e) => e.offset), [2, 3])

  const stale = await WsClient.connect(t, b.wsUrl, token('6'))
  const refused = await stale.subscribe(['product:9'], { 'product:9': { offset: 1, epoch: 'some-older-epoch' } })
  t.same(refused.payload.recovered, { 'product:9': false }, 'another epoch: reload, no partial replay')
  await publish(a.url, 'product:9', 4)
  t.match(await stale.next((f) => f.channel === 'product:9'), { offset: 4 }, 'then live from the position')
})

t.test('SSE Last-Event-ID resumes on another instance', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const { a, b } = await twoInstances(t)
  const bearer = token('7')
  const first = await SseClient.open(t, `${a.url}/sse?channels=product:10&token=${bearer}`)
  await first.waitFor(1, (e) => e.event === 'system:connected')
  await publish(a.url, 'product:10', 1)
  await publish(b.url, 'product:10', 2)
  const seen = await first.waitFor(2, (e) => e.event === 'test:event')
  const lastId = seen[1].id!
  first.close()

  await publish(b.url, 'product:10', 3)
  await publish(a.url, 'product:10', 4)
  const resumed = await SseClient.open(t, `${b.url}/sse?channels=product:10`, { authorization: `Bearer ${bearer}`, 'last-event-id': lastId })
  t.equal(resumed.status, 200)
  const missed = await resumed.waitFor(2, (e) => e.event === 'test:event')
  t.same(missed.map((e) => [e.data.offset, e.data.payload.n]), [[3, 3], [4, 4]], 'exactly the missed events, in order')
  await publish(a.url, 'product:10', 5)
  t.match((await resumed.waitFor(3, (e) => e.event === 'test:event'))[2].data, { offset: 5 }, 'then live')
  t.notOk(resumed.events.some((e) => e.event === 'system:recovery'), 'no recovery warning: nothing was lost')
})

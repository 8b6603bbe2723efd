import t, { type Test } from 'tap'
import { loadConfig } from '../../lib/ops/config.js'
import { adminToken, post, requireService, serviceToken, SseClient, startServer, token, WsClient } from '../support/helper.js'
import { REDIS_CLUSTER_NODES, redisClusterAvailable, uniquePrefix } from '../support/redis-fixture.js'
import { holdServiceLock } from '../support/service-lock.js'

// Two gateways on the real 6-node Redis Cluster (REDIS_CLUSTER_NODES): docs/protocol.md and
// docs/operations.md, "Redis Cluster". The broker-level cases are in test/broker/redis-cluster-*.
await holdServiceLock(t, 'redis-cluster', 'shared')
const available = await redisClusterAvailable()

async function twoOnCluster (t: Test) {
  const settings = { REDIS_CLUSTER_NODES, REDIS_KEY_PREFIX: uniquePrefix('gw-cluster'), PRESENCE_INTERVAL_MS: 100 }
  return { settings, a: await startServer(t, settings), b: await startServer(t, settings) }
}

t.test('two gateways on a cluster: events across instances with one offset sequence, recovery on the other one, SSE too', async (t) => {
  if (!requireService(t, 'Redis Cluster', available)) return
  const { a, b } = await twoOnCluster(t)
  const channels = ['product:c1', 'room:c2', 'inventory', 'products']
  const onA = await WsClient.connect(t, a.wsUrl, token('u-a'))
  const onB = await WsClient.connect(t, b.wsUrl, token('u-b'))
  await onA.subscribe(channels)
  const sub = await onB.subscribe(channels)
  const sse = await SseClient.open(t, `${b.url}/sse?channels=product:c1&token=${token('u-s')}`)
  await sse.waitFor(1, (e) => e.event === 'system:connected')
  for (let n = 0; n < 6; n++) {
    const via = n % 2 === 0 ? a : b
    const res = await post(`${via.url}/realtime/broadcast`, serviceToken(), { channels, type: 'test:n', payload: { n } })
    t.equal(res.status, 202)
  }
  for (const client of [onA, onB]) {
    for (const channel of channels) {
      const got = await Promise.all(Array.from({ length: 6 }, async () => await client.next((f) => f.type === 'test:n' && f.channel === channel)))
      t.same(got.map((f) => f.offset), [1, 2, 3, 4, 5, 6], `${channel}: offsets 1..6 in order`)
    }
  }
  const sseEvents = await sse.waitFor(6, (e) => e.event === 'test:n')
  t.same(sseEvents.map((e) => e.data.offset), [1, 2, 3, 4, 5, 6], 'SSE on the other instance too')
  // A client that saw up to offset 2 on B resumes on A.
  const epoch = sub.payload.positions['product:c1'].epoch as string
  const resumed = await WsClient.connect(t, a.wsUrl, token('u-r'))
  const ack = await resumed.subscribe(['product:c1'], { 'product:c1': { offset: 2, epoch } })
  t.match(ack.payload, { recovered: { 'product:c1': true } })
  const replay = await Promise.all(Array.from({ length: 4 }, async () => await resumed.next((f) => f.type === 'test:n')))
  t.same(replay.map((f) => f.offset), [3, 4, 5, 6], 'what was missed, from the channel\'s shard')
})

t.test('stats, presence, disconnect and revoke across instances on a cluster', async (t) => {
  if (!requireService(t, 'Redis Cluster', available)) return
  const { settings, a, b } = await twoOnCluster(t)
  const one = await WsClient.connect(t, a.wsUrl, token('p1'))
  const two = await WsClient.connect(t, b.wsUrl, token('p2'))
  await one.subscribe(['product:pc'])
  await two.subscribe(['product:pc'])
  await one.nextPresence((f) => f.channel === 'product:pc' && f.payload.connections === 2 && f.payload.users === 2)
  const stats = async () => (await (await fetch(`${a.url}/realtime/stats`, { headers: { authorization: `Bearer ${adminToken()}` } })).json()) as any
  // The other instance's figures arrive with its next heartbeat (every 2 s).
  let body = await stats()
  for (let i = 0; i < 50 && body.totalConnections < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    body = await stats()
  }
  t.match(body, { totalConnections: 2 }, 'stats count both instances')
  t.ok(body.channels >= 3, `distinct channels counted over every master (${body.channels})`)
  const revoke = await post(`${b.url}/realtime/disconnect`, serviceToken(), { userId: 'p1' })
  t.equal(revoke.status, 202)
  t.equal((await one.closed).code, 4003, 'a disconnect from the other instance reaches it (control over sharded pub/sub)')
  const leaver = token('leaver')
  const live = await WsClient.connect(t, a.wsUrl, leaver)
  const revoked = await post(`${b.url}/realtime/revoke`, serviceToken(), { userId: 'leaver', issuedBefore: new Date(Date.now() + 1000).toISOString() })
  t.equal(revoked.status, 202)
  t.equal((await live.closed).code, 4003, 'a revocation closes the user on the other instance')
  await t.rejects(WsClient.connect(t, a.wsUrl, leaver), /HTTP 401/, 'and its token is refused there')
  const later = await startServer(t, settings)
  await t.rejects(WsClient.connect(t, later.wsUrl, leaver), /HTTP 401/, 'by an instance started later too (revocations kept in the cluster)')
})

t.test('REDIS_CLUSTER_NODES: malformed, or with REDIS_URL, stops start-up naming the variable', async (t) => {
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: 'localhost' }), /REDIS_CLUSTER_NODES/)
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:30001,:70000' }), /REDIS_CLUSTER_NODES must be a comma-separated list of host:port/)
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:30001', REDIS_URL: 'redis://127.0.0.1:6379' }), /REDIS_CLUSTER_NODES is set together with REDIS_URL/)
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:30001', REDIS_KEY_PREFIX: 'a{b}:' }), /REDIS_KEY_PREFIX/)
  t.match(loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:30001, [::1]:30002' }), { REDIS_CLUSTER_NODES: '127.0.0.1:30001, [::1]:30002' })
})

t.test('a cluster that is down: not ready (naming it), publishes 503', async (t) => {
  // Seeds where nothing listens: the gateway starts, not ready, and says why.
  const { url } = await startServer(t, { REDIS_CLUSTER_NODES: '127.0.0.1:1,127.0.0.1:2', REDIS_KEY_PREFIX: uniquePrefix('gw-down') })
  const ready = await fetch(`${url}/health/ready`)
  t.equal(ready.status, 503)
  t.match(await ready.json(), { unavailable: ['redis-cluster'], checks: { 'redis-cluster': 'unavailable' } })
  const res = await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:x', type: 't', payload: {} })
  t.equal(res.status, 503)
  t.equal(res.headers.get('retry-after'), '1')
})

import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { mintToken } from '../../lib/auth/token.js'
import { post, requireService, type RunningServer, serviceToken, startServer, TEST_SECRET, token, WsClient } from '../support/helper.js'
import { eventually, REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'
import { monitorRedis } from '../support/redis-monitor.js'

// Issue 15, "Speed": checking revocations costs no Redis round trip per connect. Every
// instance keeps its own copy (lib/auth/revocations.ts), kept current by the control
// channel's pub/sub and read again from Redis when the subscriber connection comes back
// (lib/broker/redis-control.ts). Watched with MONITOR, filtered to the instance's own two
// connections (CLIENT LIST by name), so other users of the shared Redis do not count.
const redisUp = await redisAvailable()

interface Watch {
  /** Commands the instance sent since the last `take`, as their arguments. */
  take(): string[][]
  /**
   * Waits until Redis has run everything the command connection sent so far (an ECHO sent
   * through it shows up in MONITOR after them), then takes what was seen.
   */
  settle(server: RunningServer): Promise<string[][]>
  /** Re-reads which client addresses are the instance's (after a reconnect). */
  refresh(): Promise<void>
  admin: Redis
  nodeId: string
}

async function watchInstance (t: Test, nodeId: string): Promise<Watch> {
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
  admin.on('error', () => {})
  let addresses = new Set<string>()
  const refresh = async (): Promise<void> => {
    const list = await admin.client('LIST') as string
    addresses = new Set(list.split('\n').filter((l) => l.includes(` name=rtg-${nodeId}:`)).map((l) => /addr=(\S+)/.exec(l)?.[1] ?? ''))
  }
  await refresh()
  t.teardown(() => admin.disconnect())
  const monitor = await monitorRedis(t, REDIS_URL)
  let seen: string[][] = []
  monitor.onCommand((args, source) => { if (addresses.has(source)) seen.push(args) })
  const take = (): string[][] => { const s = seen; seen = []; return s }
  let markers = 0
  const settle = async (server: RunningServer): Promise<string[][]> => {
    const marker = `settled-${markers++}`
    await (server.app.hub.broker as unknown as { redis: Redis }).redis.echo(marker)
    await eventually(`MONITOR shows ${marker}`, () => seen.some((c) => c[1] === marker), 30_000)
    return take().filter((c) => c[1] !== marker)
  }
  return { take, settle, refresh, admin, nodeId }
}

async function instance (t: Test) {
  const prefix = uniquePrefix('revocation-cost')
  await redisClient(t, prefix)
  const nodeId = `revcost-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  // One presence heartbeat in 10 minutes: the only background commands left are the probe's PINGs.
  const server = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix, NODE_ID: nodeId, PRESENCE_INTERVAL_MS: 600_000 })
  return { prefix, server, watch: await watchInstance(t, nodeId) }
}

/**
 * The commands that are not the instance's background work, which runs on timers whether
 * clients connect or not: the connection probe's PING, the cluster-stats heartbeat
 * (a MULTI that writes `P nodes` and `P node:<id>`, plugins/cluster.ts).
 */
const BACKGROUND = new Set(['ping', 'multi', 'exec'])
const work = (commands: string[][], prefix: string): string[][] =>
  commands.filter((c) => !BACKGROUND.has(c[0].toLowerCase()) && !(c[1] ?? '').startsWith(`${prefix}node`))
/** Whether a command names a key or channel of user `u`'s own channel. */
const aboutUserChannel = (c: string[], user: string): boolean => c.slice(1).some((a) => a.endsWith(`:user:${user}`))

t.test('a connect sends Redis nothing but its own channel\'s subscribe and reads, revocations or not', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { prefix, server, watch } = await instance(t)
  // Something is revoked (another user), so the local list is not empty.
  t.equal((await post(`${server.url}/realtime/revoke`, serviceToken(), { userId: 'someone-else', issuedBefore: Math.floor(Date.now() / 1000) })).status, 202)
  await watch.settle(server)

  const users = Array.from({ length: 20 }, (_, i) => `conn-${i}`)
  for (const user of users) await WsClient.connect(t, server.wsUrl, token(user))
  const commands = work(await watch.settle(server), prefix)
  t.same(commands.filter((c) => c.some((a) => a.endsWith('revocations'))), [], 'no command reads the revocations')
  t.same(commands.filter((c) => !users.some((u) => aboutUserChannel(c, u))), [], 'every command is about a connecting user\'s own channel')

  // The same user again: the channel is held already, so only its position is read.
  const again = users.slice(0, 5)
  for (const user of again) await WsClient.connect(t, server.wsUrl, token(user))
  const repeat = work(await watch.settle(server), prefix)
  t.same(repeat.filter((c) => !again.some((u) => aboutUserChannel(c, u))), [], 'a second connection of a user: its own channel only')
  t.notOk(repeat.some((c) => c[0].toLowerCase() === 'subscribe'), 'and no new SUBSCRIBE')

  // A revoked token is refused from the local copy: no command at all.
  const revoked = mintToken(TEST_SECRET, { sub: 'someone-else', ttlSeconds: 3600 }, Date.now() - 60_000)
  await t.rejects(WsClient.connect(t, server.wsUrl, revoked), /HTTP 401/)
  t.same(work(await watch.settle(server), prefix), [], 'refusing a revoked token costs no command')
})

t.test('the local copy is read again from Redis when the subscriber connection comes back', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { prefix, server, watch } = await instance(t)
  await WsClient.connect(t, server.wsUrl, token('reader'))
  // Stored behind the instance's back (as if its pub/sub message were missed while it was away).
  const issuedBefore = Math.floor(Date.now() / 1000)
  await watch.admin.hset(`${prefix}revocations`, 'u:missed', JSON.stringify({ kind: 'user', userId: 'missed', issuedBefore, until: Date.now() + 600_000 }))
  const old = mintToken(TEST_SECRET, { sub: 'missed', ttlSeconds: 3600 }, Date.now() - 60_000)
  const live = await WsClient.connect(t, server.wsUrl, old)
  t.ok(live, 'not known yet: the copy is local')

  // Only this instance's subscriber, by id (the Redis is shared).
  const list = await watch.admin.client('LIST') as string
  const sub = list.split('\n').find((l) => l.includes(` name=rtg-${watch.nodeId}:sub`))
  t.ok(sub, 'the subscriber connection is listed')
  await watch.admin.client('KILL', 'ID', /id=(\d+)/.exec(sub ?? '')?.[1] ?? '0')
  await eventually('the revocations are read again', () => watch.take().some((c) => c[0].toLowerCase() === 'hgetall' && c[1] === `${prefix}revocations`))
  await eventually('the missed revocation applies', async () => {
    try {
      await WsClient.connect(t, server.wsUrl, old)
      return false
    } catch (err) {
      return /HTTP 401/.test((err as Error).message)
    }
  })
  t.pass('refused after the reload')
  const closed = await Promise.race([live.closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000))])
  t.equal(closed?.code, 4003, 'and the live connection it names is closed, as its message would have done')
})

t.test('revocations a Redis lost (restarted empty) are written back from the copies, and stay in force', async (t) => {
  // Audit: after Redis restarted without persistence every instance replaced its copy with
  // the empty hash, and revoked tokens worked again everywhere.
  if (!requireService(t, 'Redis', redisUp)) return
  const { prefix, server, watch } = await instance(t)
  const old = mintToken(TEST_SECRET, { sub: 'lost', ttlSeconds: 3600 }, Date.now() - 60_000)
  t.equal((await post(`${server.url}/realtime/revoke`, serviceToken(), { userId: 'lost' })).status, 202)
  const stored = await watch.admin.hget(`${prefix}revocations`, 'u:lost')
  t.ok(stored, 'kept in Redis')
  await watch.admin.del(`${prefix}revocations`)

  const list = await watch.admin.client('LIST') as string
  const sub = list.split('\n').find((l) => l.includes(` name=rtg-${watch.nodeId}:sub`))
  await watch.admin.client('KILL', 'ID', /id=(\d+)/.exec(sub ?? '')?.[1] ?? '0')
  await eventually('written back to Redis', async () => await watch.admin.hget(`${prefix}revocations`, 'u:lost') !== null)
  t.same(JSON.parse(await watch.admin.hget(`${prefix}revocations`, 'u:lost') ?? '{}'), JSON.parse(stored ?? '{}'), 'as it was')
  await t.rejects(WsClient.connect(t, server.wsUrl, old), /HTTP 401/, 'still refused here')
  const later = await startServer(t, { REDIS_URL, REDIS_KEY_PREFIX: prefix })
  await t.rejects(WsClient.connect(t, later.wsUrl, old), /HTTP 401/, 'and by an instance started afterwards')
})

t.test('revocations leave Redis when they end: a revoke drops ended ones, and the hash expires with its last', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { prefix, server, watch } = await instance(t)
  const key = `${prefix}revocations`
  // One that ended while no instance started or reconnected (nothing else would drop it).
  await watch.admin.hset(key, 'u:gone', JSON.stringify({ kind: 'user', userId: 'gone', issuedBefore: 1, until: Date.now() - 1000 }), 'j:broken', 'not json')
  const expiresAt = new Date(Date.now() + 120_000)
  t.equal((await post(`${server.url}/realtime/revoke`, serviceToken(), { jti: 'short', expiresAt: expiresAt.toISOString() })).status, 202)
  t.same(Object.keys(await watch.admin.hgetall(key)), ['j:short'], 'what had ended (or cannot be read) is gone; the new one stays')
  const left = await watch.admin.pttl(key)
  t.ok(left > 110_000 && left <= 120_000, `the hash expires with its last revocation (${left} ms)`)
  t.equal((await post(`${server.url}/realtime/revoke`, serviceToken(), { userId: 'longer' })).status, 202)
  t.ok(await watch.admin.pttl(key) > 120_000, 'a longer one moves it (REVOCATION_TTL_SECONDS)')
})

t.test('a revocation made while the copy is being read again is not lost when the read lands', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const { server, watch } = await instance(t)
  // The reload's HGETALL answers before the revoke, and its answer is applied after it.
  const control = server.app.hub.broker.control as { load: () => Promise<unknown[]> }
  const load = control.load.bind(control)
  let release = (): void => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let reading = false
  control.load = async () => {
    const list = await load()
    reading = true
    await held
    return list
  }
  const list = await watch.admin.client('LIST') as string
  const sub = list.split('\n').find((l) => l.includes(` name=rtg-${watch.nodeId}:sub`))
  await watch.admin.client('KILL', 'ID', /id=(\d+)/.exec(sub ?? '')?.[1] ?? '0')
  await eventually('a reload read the hash', () => reading)

  const old = mintToken(TEST_SECRET, { sub: 'during', ttlSeconds: 3600 }, Date.now() - 60_000)
  t.equal((await post(`${server.url}/realtime/revoke`, serviceToken(), { userId: 'during' })).status, 202)
  release()
  await new Promise((resolve) => setTimeout(resolve, 100))
  await t.rejects(WsClient.connect(t, server.wsUrl, old), /HTTP 401/, 'still refused after the older list replaced the copy')
})

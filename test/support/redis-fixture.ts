import { type ChildProcess, spawn } from 'node:child_process'
import { freePort } from './ports.js'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { globLiteral } from '../../lib/broker/redis-layout.js'

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

/** True when a Redis answers PING at `url` within a second. */
export async function redisAvailable (url = REDIS_URL): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 })
  probe.on('error', () => {})
  try {
    await probe.connect()
    return (await probe.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

/** A key prefix no other test file or run uses. */
export const uniquePrefix = (name: string): string => `test:${name}:${randomUUID().slice(0, 8)}:`

/**
 * A plain Redis client for assertions, closed when the test ends; on teardown it also
 * deletes every key under `prefix` (never FLUSHALL: the Redis is shared).
 */
export async function redisClient (t: Test, prefix?: string, url = REDIS_URL): Promise<Redis> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 })
  redis.on('error', () => {})
  t.teardown(async () => {
    if (prefix !== undefined) await deletePrefix(redis, prefix).catch(() => {})
    redis.disconnect()
  })
  return redis
}

export async function deletePrefix (redis: Redis, prefix: string): Promise<number> {
  let cursor = '0'
  let deleted = 0
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${globLiteral(prefix)}*`, 'COUNT', 500)
    cursor = next
    if (keys.length > 0) deleted += await redis.del(...keys)
  } while (cursor !== '0')
  return deleted
}

/** Polls `check` until it is true; fails with `what` after `timeoutMs` (never hangs). */
export async function eventually (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let ok = false
    try { ok = await check() } catch { ok = false }
    if (ok) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * A redis-server of the test's own, that the test may kill and start again on the same port
 * (outage tests). Without persistence, unless `dataDir` is given: then an append-only file
 * there, written at every command, brings its data (and Redis Functions) back after a kill.
 * Stopped when the test ends.
 */
export class OwnRedis {
  private child: ChildProcess | null = null

  private constructor (readonly port: number, private readonly dataDir?: string) {}

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  static async start (t: Test, options: { dataDir?: string } = {}): Promise<OwnRedis> {
    const server = await OwnRedis.reserve(t, options)
    await server.restart()
    return server
  }

  /** A port for a server not started yet (`restart()` starts it). */
  static async reserve (t: Test, options: { dataDir?: string } = {}): Promise<OwnRedis> {
    const server = new OwnRedis(await freePort(), options.dataDir)
    t.teardown(() => server.kill())
    return server
  }

  async restart (): Promise<void> {
    if (this.child !== null) throw new Error('already running')
    const persistence = this.dataDir === undefined
      ? ['--appendonly', 'no']
      : ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', this.dataDir]
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', ...persistence], {
      stdio: 'ignore'
    })
    this.child = child
    child.once('exit', () => { if (this.child === child) this.child = null })
    await eventually(`redis-server on port ${this.port}`, () => redisAvailable(this.url), 10_000)
  }

  /** SIGSTOP / SIGCONT: a server that hangs with its sockets open. */
  pause (): void { this.child?.kill('SIGSTOP') }
  resume (): void { this.child?.kill('SIGCONT') }

  /** SIGKILL: the server vanishes with everything it held. */
  async kill (): Promise<void> {
    const child = this.child
    if (child === null) return
    this.child = null
    const exited = once(child, 'exit')
    child.kill('SIGKILL')
    child.kill('SIGCONT')
    await exited
  }
}

/** The local Redis Cluster's seeds (scripts/redis-cluster.sh; `npm run services:start` starts it). */
export const REDIS_CLUSTER_NODES = process.env.TEST_REDIS_CLUSTER_NODES ??
  '127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003,127.0.0.1:30004,127.0.0.1:30005,127.0.0.1:30006'

export const clusterSeeds = (nodes = REDIS_CLUSTER_NODES): Array<{ host: string, port: number }> =>
  nodes.split(',').map((seed) => ({ host: seed.slice(0, seed.lastIndexOf(':')), port: Number(seed.slice(seed.lastIndexOf(':') + 1)) }))

/** True when the first seed answers CLUSTER INFO with `cluster_state:ok`. */
export async function redisClusterAvailable (nodes = REDIS_CLUSTER_NODES): Promise<boolean> {
  const [seed] = clusterSeeds(nodes)
  const probe = new Redis({ ...seed, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 })
  probe.on('error', () => {})
  try {
    await probe.connect()
    return (await probe.cluster('INFO') as string).includes('cluster_state:ok')
  } catch {
    return false
  } finally {
    probe.disconnect()
  }
}

/**
 * Reads Redis has processed from its clients' sockets so far (INFO stats). On a busy machine
 * one socket write can arrive in two reads, so it is reported, not asserted: count the
 * writes themselves with countSocketWrites.
 */
export async function readsProcessed (admin: Redis): Promise<number> {
  const match = /total_reads_processed:(\d+)/.exec(await admin.info('stats'))
  if (match === null) throw new Error('INFO stats has no total_reads_processed')
  return Number(match[1])
}

/**
 * Counts the writes a connection hands the operating system from now on (its socket's
 * `_write` and `_writev`: a corked batch is one writev), until the test ends. Unlike Redis's
 * read count, it does not move with the machine's load.
 */
export function countSocketWrites (t: Test, connection: Redis): () => number {
  const socket = connection.stream as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>
  let writes = 0
  const own = { _write: socket._write, _writev: socket._writev }
  for (const method of ['_write', '_writev'] as const) {
    socket[method] = function (this: unknown, ...args: unknown[]) {
      writes++
      return own[method].apply(this, args)
    }
  }
  // The wrappers are the socket's own properties: removed, the prototype's methods are back.
  t.teardown(() => { delete (socket as Partial<typeof socket>)._write; delete (socket as Partial<typeof socket>)._writev })
  return () => writes
}

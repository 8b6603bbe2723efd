import { Redis } from 'ioredis'
import { globLiteral } from '../../lib/broker/redis-layout.js'

/**
 * The cluster case's Redis keys live under a prefix of their own, and only those are
 * removed afterwards (SCAN MATCH prefix* + UNLINK, never FLUSH*: other tests share this
 * Redis). Bounded: at most MAX_SCANS cursor steps and DEADLINE_MS in all.
 */
const MAX_SCANS = 10_000
const DEADLINE_MS = 15_000

/** A connection that fails at once rather than waiting for a Redis that is not there. */
function connect (url: string): Redis {
  return new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, connectTimeout: 3000, commandTimeout: 5000, retryStrategy: () => null })
}

/** Throws, naming Redis, when it does not answer PING. */
export async function requireRedis (url: string): Promise<void> {
  const redis = connect(url)
  redis.on('error', () => { /* the PING below reports it */ })
  try {
    await redis.connect()
    await redis.ping()
  } catch (err) {
    throw new Error(`redis at ${url} is not reachable: ${(err as Error).message}`)
  } finally {
    redis.disconnect()
  }
}

/**
 * Deletes every key under `prefix`; resolves to how many were deleted. On a cluster node
 * (`oneByOne`) each key is unlinked by itself: one command may name keys of one slot only.
 */
export async function deletePrefix (url: string, prefix: string, oneByOne = false): Promise<number> {
  if (prefix.length < 4) throw new Error(`refusing to delete under the short prefix ${JSON.stringify(prefix)}`)
  const redis = connect(url)
  redis.on('error', () => { /* the commands below report it */ })
  const deadline = Date.now() + DEADLINE_MS
  let deleted = 0
  try {
    await redis.connect()
    let cursor = '0'
    for (let i = 0; i < MAX_SCANS && Date.now() < deadline; i++) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${globLiteral(prefix)}*`, 'COUNT', 500)
      if (keys.length > 0 && !oneByOne) deleted += await redis.unlink(...keys)
      if (keys.length > 0 && oneByOne) deleted += (await Promise.all(keys.map(async (key) => await redis.unlink(key)))).reduce((a, b) => a + b, 0)
      cursor = next
      if (cursor === '0') break
    }
    return deleted
  } finally {
    redis.disconnect()
  }
}

/** The masters of a Redis Cluster (`host:port` seeds), as plain connections. */
export async function clusterMasters (seeds: string): Promise<Redis[]> {
  const [first] = seeds.split(',')
  const probe = connect(`redis://${first}`)
  probe.on('error', () => {})
  try {
    await probe.connect()
    const shards = await probe.cluster('SLOTS') as unknown as Array<[number, number, [string, number]]>
    const masters = [...new Set(shards.map(([, , [host, port]]) => `${host}:${port}`))].sort()
    return masters.map((node) => {
      const redis = connect(`redis://${node}`)
      redis.on('error', () => {})
      return redis
    })
  } finally {
    probe.disconnect()
  }
}

/** Seconds of CPU (user + system) each Redis server has used so far (INFO cpu), by `host:port`. */
export async function redisCpuSeconds (urls: readonly string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  await Promise.all(urls.map(async (url) => {
    const redis = connect(url)
    redis.on('error', () => {})
    try {
      await redis.connect()
      const info = await redis.info('cpu')
      const field = (name: string) => Number(new RegExp(`${name}:([0-9.]+)`).exec(info)?.[1] ?? 0)
      out.set(url.replace(/^redis:\/\//, ''), field('used_cpu_user') + field('used_cpu_sys'))
    } finally {
      redis.disconnect()
    }
  }))
  return out
}

/** deletePrefix on every master of a Redis Cluster. */
export async function deleteClusterPrefix (seeds: string, prefix: string): Promise<number> {
  const masters = await clusterMasters(seeds)
  const urls = masters.map((m) => `redis://${m.options.host}:${m.options.port}`)
  for (const m of masters) m.disconnect()
  const counts = await Promise.all(urls.map(async (url) => await deletePrefix(url, prefix, true)))
  return counts.reduce((a, b) => a + b, 0)
}

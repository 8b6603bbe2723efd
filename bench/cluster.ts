import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ChildChannel } from './lib/ipc.js'
import { clusterMasters, deleteClusterPrefix, deletePrefix, redisCpuSeconds, requireRedis } from './lib/redis-prefix.js'
import { connectClients, droppedClients, measureFanout, type ScenarioResult, type Settings, shutdown, startLoads, startServer } from './scenario.js'

/**
 * The cross-instance case (issue 4): INSTANCES gateways on one Redis, the clients spread
 * evenly over them, every event published through instance 0 (its broker API, then HTTP
 * POST /realtime/publish on it), so each event goes publish → Redis PUBLISH → every
 * instance → its clients. The same bursts and steady rate as the single gateway, so
 * run.ts can report cluster ÷ single at the same C.
 */
export const INSTANCES = 3
/** The local Redis the tests use too: hence a key prefix of the run's own, deleted afterwards. */
const REDIS_URL = 'redis://127.0.0.1:6379'
/** The local Redis Cluster (scripts/redis-cluster.sh: 3 masters, 3 replicas), for `--redis-cluster`. */
export const REDIS_CLUSTER_NODES = process.env.BENCH_REDIS_CLUSTER_NODES ??
  '127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003,127.0.0.1:30004,127.0.0.1:30005,127.0.0.1:30006'

/** What the instances share: one Redis, or a Redis Cluster (sharded pub/sub). */
export type ClusterBackend = 'redis' | 'redis-cluster'

/** Key prefixes of cluster runs still going: what an interrupted run must still delete. */
const livePrefixes = new Set<string>()

/** For run.ts's signal handler, after the children are killed: delete what runs in flight left in Redis. */
export async function deleteLivePrefixes (): Promise<void> {
  await Promise.all([...livePrefixes].map(async (prefix) => await Promise.all([
    deletePrefix(REDIS_URL, prefix).catch(() => 0),
    deleteClusterPrefix(REDIS_CLUSTER_NODES, prefix).catch(() => 0)
  ])))
}

/**
 * Who runs on the instances: the gateway, or (issue 18) Socket.IO on `@socket.io/redis-adapter`
 * or on `@socket.io/redis-streams-adapter` (bench/servers/socketio-cluster.ts), same clients
 * and load, spoken to on the wire as in the single Socket.IO scenario.
 */
export const CLUSTER_PEERS = ['gateway', 'socketio-redis', 'socketio-streams'] as const
export type ClusterPeer = typeof CLUSTER_PEERS[number]

/** A Socket.IO instance of the cluster case, started the way scenario.ts starts the others. */
function startSocketIo (adapter: 'redis' | 'streams', settings: Settings, track: (c: ChildChannel) => void, env: Record<string, string>, label: string): ChildChannel {
  const profile = settings.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${settings.profileDir}/${label}`] : []
  const child = fork(fileURLToPath(new URL('servers/socketio-cluster.js', import.meta.url)), [], {
    execArgv: ['--expose-gc', ...profile],
    env: { ...process.env, ...env, BENCH_SIO_ADAPTER: adapter },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const channel = new ChildChannel(child, label)
  track(channel)
  return channel
}

export interface ClusterResult extends Omit<ScenarioResult, 'server' | 'memory'> {
  server: 'gateway-cluster' | 'socketio-cluster'
  /** Absent in results written before issue 18's Socket.IO peers: the gateway. */
  peer?: ClusterPeer
  instances: number
  backend: ClusterBackend
  /** Seconds of CPU each Redis server (each master of a cluster) used during the fan-out measurements, by `host:port`. */
  redisCpu: Record<string, number>
  /** Connections each instance counted once every client was connected. */
  perInstance: number[]
  keyPrefix: string
  redisKeysDeleted?: number
}

export async function runCluster (
  connections: number, settings: Settings, track: (c: ChildChannel) => void, backend: ClusterBackend = 'redis', peer: ClusterPeer = 'gateway'
): Promise<ClusterResult> {
  if (peer !== 'gateway' && backend !== 'redis') throw new Error(`${peer} runs on one Redis only`)
  const secret = `bench-${process.pid}-${Date.now()}`
  const keyPrefix = `rtg-bench-${process.pid}-${Date.now()}:`
  const result: ClusterResult = {
    server: peer === 'gateway' ? 'gateway-cluster' : 'socketio-cluster', peer, instances: INSTANCES, backend, redisCpu: {}, connections, connected: 0, connectErrors: {}, connectPerSec: 0, dropped: 0, perInstance: [], keyPrefix
  }
  let redisUrls = [REDIS_URL]
  const servers: ChildChannel[] = []
  let loads: ChildChannel[] = []
  livePrefixes.add(keyPrefix)
  try {
    let env: Record<string, string>
    if (backend === 'redis') {
      await requireRedis(REDIS_URL)
      // Not a cluster, even when BENCH_REDIS_CLUSTER_NODES picks the one this run compares with.
      env = { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: keyPrefix, BENCH_REDIS_CLUSTER_NODES: '' }
    } else {
      const masters = await clusterMasters(REDIS_CLUSTER_NODES)
      redisUrls = masters.map((m) => `redis://${m.options.host}:${m.options.port}`)
      for (const m of masters) m.disconnect()
      env = { BENCH_REDIS_CLUSTER_NODES: REDIS_CLUSTER_NODES, BENCH_REDIS_KEY_PREFIX: keyPrefix }
    }
    for (let k = 0; k < INSTANCES; k++) {
      servers.push(peer === 'gateway'
        ? startServer('gateway', secret, settings, track, env, `gateway-cluster-${k}`)
        : startSocketIo(peer === 'socketio-redis' ? 'redis' : 'streams', settings, track, env, `${peer}-${k}`))
    }
    const ports = (await Promise.all(servers.map((s) => s.event<{ port: number }>('ready', 30_000)))).map((r) => r.port)
    loads = startLoads(settings, track)
    const targets = ports.map((port, k) => ({
      url: peer === 'gateway' ? `ws://127.0.0.1:${port}/ws` : `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`,
      count: Math.floor(connections / INSTANCES) + (k < connections % INSTANCES ? 1 : 0)
    }))
    const connect = await connectClients(loads, peer === 'gateway' ? 'gateway' : 'socketio', targets, settings, secret)
    result.connected = connect.connected
    result.connectPerSec = connect.perSec
    result.connectErrors = connect.errors
    if (result.connected === 0) throw new Error(`no client connected: ${JSON.stringify(result.connectErrors)}`)
    result.perInstance = (await Promise.all(servers.map((s) => s.request<{ connections: number }>({ op: 'connections' }, 10_000))))
      .map((r) => r.connections)

    const httpPort = settings.noHttp === true ? undefined : ports[0]
    const cpuBefore = await redisCpuSeconds(redisUrls)
    const { httpLastFailure, ...measured } = await measureFanout(servers, servers[0], loads, settings, result.connected, secret, httpPort)
    const cpuAfter = await redisCpuSeconds(redisUrls)
    for (const [node, seconds] of cpuAfter) result.redisCpu[node] = seconds - (cpuBefore.get(node) ?? seconds)
    Object.assign(result, measured)
    if ((result.httpFailures ?? 0) > 0) result.connectErrors[`http publish: ${httpLastFailure ?? ''}`] = result.httpFailures ?? 0
    result.dropped = await droppedClients(loads)
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    await shutdown(servers, loads)
    // After the instances are gone, so no heartbeat writes a key back.
    const cleanup = backend === 'redis' ? deletePrefix(REDIS_URL, keyPrefix) : deleteClusterPrefix(REDIS_CLUSTER_NODES, keyPrefix)
    result.redisKeysDeleted = await cleanup.catch((err: unknown) => {
      result.error ??= `redis cleanup under ${keyPrefix} failed: ${(err as Error).message}`
      return undefined
    })
    livePrefixes.delete(keyPrefix)
  }
  return result
}

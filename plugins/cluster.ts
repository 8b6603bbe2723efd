import fp from 'fastify-plugin'
import { BrokerUnavailableError } from '../lib/broker/broker.js'
import { NodeRegistry } from '../lib/ops/node-registry.js'
import { RedisBroker } from '../lib/broker/redis-broker.js'
import { type ClusterStats, mergeNodeStats, type NodeStats } from '../lib/ops/stats.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The stats of GET /realtime/stats, over every live instance when Redis is on. */
    clusterStats(): Promise<ClusterStats>
  }
}

/** Each instance reports every HEARTBEAT_MS; a report lives three beats, so one missed beat is not death. */
const HEARTBEAT_MS = 2000
const NODE_TTL_MS = 3 * HEARTBEAT_MS
/** How long start-up waits for Redis before opening the doors not ready (and retrying on). */
const STARTUP_WAIT_MS = 5000

const byNodeId = (a: NodeStats, b: NodeStats) => a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0

/**
 * The instances as one gateway. With the Redis broker, each instance heartbeats its
 * `nodeStats()` to Redis and `clusterStats()` merges every live report (this instance's
 * own taken fresh); a dead instance drops out when its report expires, a closing one
 * at once. With the memory broker, the cluster is this instance.
 */
export default fp(async (app) => {
  const broker = app.hub.broker
  if (!(broker instanceof RedisBroker)) {
    app.decorate('clusterStats', async () => mergeNodeStats([app.nodeStats()]))
    return
  }

  if (!await broker.waitUntilReady(STARTUP_WAIT_MS)) {
    app.log.warn('redis is not reachable yet: starting not ready; it is retried in the background')
  }
  const registry = new NodeRegistry(broker.redis, {
    keyPrefix: broker.layout.registryPrefix,
    countChannels: async () => await broker.distinctChannels(),
    ttlMs: NODE_TTL_MS,
    // As old as another instance's figures may be (one heartbeat).
    channelsMaxAgeMs: HEARTBEAT_MS
  })
  let failing = false
  let inFlight: Promise<void> = Promise.resolve()
  const beat = () => {
    inFlight = registry.beat(app.nodeStats()).then(() => {
      if (failing) app.log.info('cluster heartbeat is back')
      failing = false
    }, (err: unknown) => {
      if (!failing) app.log.warn({ err }, 'cluster heartbeat failed; this node drops out of the stats until redis is back')
      failing = true
    })
    return inFlight
  }
  await beat()
  const timer = setInterval(beat, HEARTBEAT_MS)
  timer.unref()

  app.decorate('clusterStats', async () => {
    let reports: NodeStats[]
    let channels: number
    try {
      [reports, channels] = await Promise.all([registry.nodes(), registry.distinctChannels()])
    } catch (err) {
      throw new BrokerUnavailableError('redis did not answer the cluster stats read', { cause: err })
    }
    const self = app.nodeStats()
    const nodes = [...reports.filter((n) => n.nodeId !== self.nodeId), self].sort(byNodeId)
    return mergeNodeStats(nodes, channels)
  })

  app.addHook('preClose', async () => {
    clearInterval(timer)
    await inFlight
    await registry.leave(app.nodeId).catch((err: unknown) => app.log.warn({ err }, 'could not leave the cluster registry'))
  })
}, { name: 'cluster', dependencies: ['hub'] })

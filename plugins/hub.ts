import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import type { Broker, DeliverFn, ResetFn } from '../lib/broker/broker.js'
import type { HistoryPolicy } from '../lib/broker/history-policy.js'
import { CloseCode } from '../lib/core/errors.js'
import { historyPolicy, listOf, redisClusterNodes } from '../lib/ops/config.js'
import { Hub } from '../lib/hub/hub.js'
import { MemoryBroker } from '../lib/broker/memory-broker.js'
import { RedisBroker } from '../lib/broker/redis-broker.js'
import type { NodeStats } from '../lib/ops/stats.js'
import { HistoryReadBudget } from '../lib/transport/history-read-budget.js'
import { NewChannelBudget, UserBudget } from '../lib/transport/user-budget.js'

declare module 'fastify' {
  interface FastifyInstance {
    hub: Hub
    /** What each channel keeps (HISTORY_POLICY): its maxSize bounds `rewind` and the history route's `limit`. */
    historyPolicy: HistoryPolicy
    /** History read from the store per user, shared by WebSocket, SSE and the history route. */
    historyReadBudget: HistoryReadBudget
    /** Channels each user may subscribe to per second, over its WebSocket frames and SSE streams (lib/transport/user-budget.ts). */
    subscribeBudget: UserBudget
    /** Channels this instance takes on for clients, all users together (lib/transport/user-budget.ts, "New channels"). */
    newChannelBudget: NewChannelBudget
    nodeId: string
    nodeStats(): NodeStats
  }
}

export interface HubPluginOptions {
  /** Picks the broker; the default is RedisBroker with REDIS_URL or REDIS_CLUSTER_NODES, else the in-process MemoryBroker. */
  createBroker?: (deliver: DeliverFn, reset: ResetFn) => Broker
}

/**
 * The shared connection registry and the broker behind it. On close, every client is
 * told to reconnect elsewhere (1012) before the broker goes away.
 */
export default fp<HubPluginOptions>(async (app, opts) => {
  const config = app.config
  const metrics = app.gatewayMetrics
  const nodeId = config.NODE_ID ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  const startedAt = new Date().toISOString()
  const policy = historyPolicy(config)
  const history = { historySize: config.HISTORY_SIZE, historyTtlSeconds: config.HISTORY_TTL_SECONDS, policy, idempotencyTtlSeconds: config.IDEMPOTENCY_TTL_SECONDS }
  const redisUrl = config.REDIS_URL
  const clusterNodes = config.REDIS_CLUSTER_NODES === undefined ? undefined : redisClusterNodes(config)
  const createBroker = opts.createBroker ?? (redisUrl !== undefined || clusterNodes !== undefined
    ? (deliver: DeliverFn, reset: ResetFn) => new RedisBroker({
        deliver,
        reset,
        ...history,
        url: redisUrl ?? '',
        clusterNodes,
        keyPrefix: config.REDIS_KEY_PREFIX,
        connectionName: `rtg-${nodeId}`,
        nodeId,
        presenceIntervalMs: config.PRESENCE_INTERVAL_MS,
        historyCacheBytes: config.HISTORY_CACHE_BYTES,
        // A storm after a full instance's connections dropped: each client's own channel lingers.
        lingerLimit: config.MAX_CONNECTIONS,
        onPublishPaced: (seconds) => metrics.publishPaced.inc(seconds),
        log: app.log.child({ component: 'redis-broker' })
      })
    : (deliver: DeliverFn, reset: ResetFn) => new MemoryBroker({ deliver, reset, ...history }))
  const hub = new Hub(createBroker, {
    maxChannelsPerConnection: config.MAX_CHANNELS_PER_CONNECTION,
    presence: { prefixes: listOf(config.PRESENCE_CHANNELS), intervalMs: config.PRESENCE_INTERVAL_MS, log: app.log.child({ component: 'presence' }) },
    onDelivered: metrics.delivered
  })

  function nodeStats (): NodeStats {
    return { nodeId, broker: hub.broker.kind, startedAt, updatedAt: new Date().toISOString(), ...hub.stats() }
  }

  metrics.bindGauges(() => hub.stats())

  app.decorate('hub', hub)
  app.decorate('historyPolicy', policy)
  app.decorate('historyReadBudget', new HistoryReadBudget(config.HISTORY_READ_BYTES_PER_SECOND, config.HISTORY_READ_BYTES_BURST,
    config.INSTANCE_HISTORY_READ_BYTES_PER_SECOND, config.INSTANCE_HISTORY_READ_BYTES_BURST))
  app.decorate('subscribeBudget', new UserBudget(config.WS_SUBSCRIBES_PER_SECOND, config.WS_SUBSCRIBES_BURST))
  app.decorate('newChannelBudget', new NewChannelBudget(config.NEW_CHANNELS_PER_SECOND, config.NEW_CHANNELS_BURST, config.MAX_CHANNELS_PER_CONNECTION))
  app.decorate('nodeId', nodeId)
  app.decorate('nodeStats', nodeStats)
  app.readiness.add(clusterNodes !== undefined ? 'redis-cluster' : hub.broker.kind,
    async () => hub.broker.isReady() && (await hub.broker.servesAll?.() ?? true))

  app.addHook('preClose', async () => {
    hub.shutDown(CloseCode.SERVICE_RESTART, 'server restarting')
  })
  app.addHook('onClose', async () => {
    // Presence shares withdrawn while Redis is still there; bounded, as a hung Redis must not hold the shutdown.
    await Promise.race([hub.close(), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
    await hub.broker.close()
  })
}, { name: 'hub', dependencies: ['config', 'metrics', 'readiness'] })

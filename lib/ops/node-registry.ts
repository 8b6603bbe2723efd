import type { RedisClient } from '../broker/redis-connection.js'
import type { NodeStats } from './stats.js'

export interface NodeRegistryOptions {
  /** What the registry's keys start with (RedisLayout.registryPrefix: one slot on a cluster, for MULTI and MGET). */
  keyPrefix: string
  /** Channels with a subscriber on some instance (RedisBroker.distinctChannels). */
  countChannels: () => Promise<number>
  /** How long a node's report outlives its last heartbeat: a dead node drops out after it. */
  ttlMs: number
}

/**
 * The instances of one gateway, as Redis knows them. Each instance writes its own stats
 * to `P node:<nodeId>` with a TTL (a heartbeat) and names itself in the set `P nodes`;
 * readers take every report still alive and prune the set of the expired ones. Expiry
 * is Redis's, so instances' clocks need not agree.
 */
export class NodeRegistry {
  private readonly setKey: string

  constructor (private readonly redis: RedisClient, private readonly options: NodeRegistryOptions) {
    this.setKey = `${options.keyPrefix}nodes`
  }

  async beat (stats: NodeStats): Promise<void> {
    await this.redis.multi()
      .set(this.nodeKey(stats.nodeId), JSON.stringify(stats), 'PX', this.options.ttlMs)
      .sadd(this.setKey, stats.nodeId)
      // The set itself goes when every instance has stopped.
      .pexpire(this.setKey, this.options.ttlMs)
      .exec()
  }

  /** A node that shuts down cleanly leaves at once rather than after its TTL. */
  async leave (nodeId: string): Promise<void> {
    await this.redis.multi().del(this.nodeKey(nodeId)).srem(this.setKey, nodeId).exec()
  }

  /** Every node whose report has not expired, ordered by node id. */
  async nodes (): Promise<NodeStats[]> {
    const ids = (await this.redis.smembers(this.setKey)).sort()
    if (ids.length === 0) return []
    const reports = await this.redis.mget(ids.map((id) => this.nodeKey(id)))
    const alive: NodeStats[] = []
    const gone: string[] = []
    reports.forEach((report, i) => {
      if (report === null) gone.push(ids[i])
      else alive.push(JSON.parse(report) as NodeStats)
    })
    if (gone.length > 0) await this.redis.srem(this.setKey, ...gone)
    return alive
  }

  /** Channels with a subscriber on some instance. */
  async distinctChannels (): Promise<number> {
    return await this.options.countChannels()
  }

  private nodeKey (nodeId: string): string {
    return `${this.options.keyPrefix}node:${nodeId}`
  }
}

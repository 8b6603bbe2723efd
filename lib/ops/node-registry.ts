import type { RedisClient } from '../broker/redis-connection.js'
import type { NodeStats } from './stats.js'

export interface NodeRegistryOptions {
  /** What the registry's keys start with (RedisLayout.registryPrefix: one slot on a cluster, for MULTI and MGET). */
  keyPrefix: string
  /** Channels with a subscriber on some instance (RedisBroker.distinctChannels). */
  countChannels: () => Promise<number>
  /** How long a node's report outlives its last heartbeat: a dead node drops out after it. */
  ttlMs: number
  /** How old the channel count may be: counted at most once per this over every instance. */
  channelsMaxAgeMs: number
}

/**
 * The instances of one gateway, as Redis knows them. Each instance writes its own stats
 * to `P node:<nodeId>` with a TTL (a heartbeat) and names itself in the set `P nodes`;
 * readers take every report still alive and prune the set of the expired ones. Expiry
 * is Redis's, so instances' clocks need not agree.
 */
export class NodeRegistry {
  private readonly setKey: string
  private readonly channelsKey: string
  /** The count under way on this instance: the stats asked meanwhile share it. */
  private counting: Promise<number> | null = null

  constructor (private readonly redis: RedisClient, private readonly options: NodeRegistryOptions) {
    this.setKey = `${options.keyPrefix}nodes`
    this.channelsKey = `${options.keyPrefix}channel-count`
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

  /**
   * Channels with a subscriber on some instance, at most `channelsMaxAgeMs` old. Counting
   * them is PUBSUB CHANNELS, which lists every channel and holds Redis meanwhile (130 ms
   * at 100k channels, every instance's publishes and reads waiting): so the count is kept
   * in Redis for the other instances, and one count at a time is made here, however many
   * admins' dashboards and stats requests ask.
   */
  async distinctChannels (): Promise<number> {
    this.counting ??= this.countShared().finally(() => { this.counting = null })
    return await this.counting
  }

  private async countShared (): Promise<number> {
    const known = await this.redis.get(this.channelsKey)
    if (known !== null) return Number(known)
    const count = await this.options.countChannels()
    await this.redis.set(this.channelsKey, String(count), 'PX', this.options.channelsMaxAgeMs)
    return count
  }

  private nodeKey (nodeId: string): string {
    return `${this.options.keyPrefix}node:${nodeId}`
  }
}

import { Redis, type Cluster, type RedisOptions } from 'ioredis'
import { BrokerUnavailableError } from './broker.js'
import { logOutages, reconnectBackoff, type RedisLogger } from './redis-connection.js'
import { slotOf } from './redis-slots.js'

export interface ShardSubscribersOptions {
  /** Names the connections in CLIENT LIST (`<name>:sub:<host:port>`). */
  name: string
  commandTimeoutMs: number
  /** How often an incomplete placement is retried (and the slot map re-read). */
  retryIntervalMs?: number
  redisOptions?: RedisOptions
  log: RedisLogger
  /** A message on a held shard channel. */
  onMessage: (name: string, message: string) => void
  /**
   * Shard channels subscribed again after they were lost (their shard's connection dropped,
   * or their slot moved to another master, as in a failover): what was published to them
   * meanwhile must be read from history.
   */
  onRestored: (names: string[]) => void
  /**
   * Holds a connection's writes to the end of the turn (lib/broker/redis-turn-cork.ts): a
   * subscribe frame naming many channels sends an SSUBSCRIBE each, as one write.
   */
  holdWrites?: (connection: Redis) => void
}

/**
 * Sharded pub/sub on a Redis Cluster (docs/operations.md, "Redis Cluster"): each held shard
 * channel is SSUBSCRIBEd on a connection to the master that owns its slot, one connection per
 * master, so a channel's messages travel only through its shard.
 *
 * The placement is reconciled rather than tracked event by event: `reconcile` compares, for
 * every held channel, the master that owns its slot now (the cluster client's slot map) with
 * the connection it is subscribed on, and moves what differs. It runs when a connection
 * becomes ready or drops, when the cluster client refreshes its slot map, and on a timer
 * while anything is unplaced (a failover takes the cluster's node timeout and an election);
 * each run also asks for a fresh slot map then. A channel that was placed before and is
 * placed again is reported to `onRestored`.
 */
export class ShardSubscribers {
  /** Held shard channels, with their slot (computed once). */
  private readonly wanted = new Map<string, number>()
  /** Held channel → the master (`host:port`) whose connection it is subscribed on. */
  private readonly placed = new Map<string, string>()
  /** Channels that were placed once and lost since: their next placement is a restoration. */
  private readonly lost = new Set<string>()
  /** Channels being subscribed for the first time by `hold` (not a loss: readiness ignores them). */
  private readonly holding = new Set<string>()
  /**
   * The latest `hold` of each channel in flight: one that fails after its channel was released
   * and held again leaves the newer hold's entries alone (review, session 30: it deleted them,
   * and the new subscriber was told subscribed and got nothing).
   */
  private readonly latestHold = new Map<string, object>()
  /**
   * Held channels neither placed nor being held for the first time: the broker is ready when
   * there are none. Kept per change (`note`) rather than found by a scan of `wanted`, which
   * every subscribe asks about (a scan per subscribe made connecting N clients O(N²)).
   */
  private readonly unplaced = new Set<string>()
  private readonly connections = new Map<string, Redis>()
  private readonly timer: NodeJS.Timeout
  private reconciling = false
  private again = false
  private closed = false

  constructor (private readonly cluster: Cluster, private readonly options: ShardSubscribersOptions) {
    cluster.on('refresh', () => this.reconcile())
    this.timer = setInterval(() => {
      if (this.closed || this.isReady()) return
      this.refreshSlots()
      this.reconcile()
    }, options.retryIntervalMs ?? 500)
    this.timer.unref()
  }

  /** True when every held channel is subscribed on its slot's master. */
  isReady (): boolean {
    return !this.closed && this.unplaced.size === 0
  }

  /** Re-files `name` in `unplaced` after a change to its entry in `wanted`, `placed` or `holding`. */
  private note (name: string): void {
    if (this.wanted.has(name) && !this.placed.has(name) && !this.holding.has(name)) this.unplaced.add(name)
    else this.unplaced.delete(name)
  }

  /** Subscribes a shard channel on its master; rejects (BrokerUnavailableError) when that master is not reachable now. */
  async hold (name: string): Promise<void> {
    this.wanted.set(name, slotOf(name))
    this.holding.add(name)
    this.note(name)
    const hold = {}
    this.latestHold.set(name, hold)
    let sentOn: Redis | undefined
    try {
      const owner = this.ownerOf(name)
      const connection = owner === undefined ? undefined : this.connectionTo(owner)
      if (owner === undefined || connection === undefined || !await this.readyWithin(connection, this.options.commandTimeoutMs)) {
        throw new BrokerUnavailableError('the redis cluster shard of this channel is not reachable')
      }
      try {
        this.options.holdWrites?.(connection)
        sentOn = connection
        await connection.ssubscribe(name)
      } catch (err) {
        throw new BrokerUnavailableError('redis did not take a subscribe', { cause: err })
      }
      if (this.wanted.has(name) && connection.status === 'ready') this.placed.set(name, owner)
      else this.unsubscribeStray(name, connection)
    } catch (err) {
      if (this.latestHold.get(name) === hold) this.wanted.delete(name)
      // A SSUBSCRIBE that timed out may still run in Redis: taken back, not left subscribed.
      if (sentOn !== undefined) this.unsubscribeStray(name, sentOn)
      throw err
    } finally {
      if (this.latestHold.get(name) === hold) {
        this.latestHold.delete(name)
        this.holding.delete(name)
      }
      this.note(name)
    }
  }

  /**
   * A channel subscribed on `connection` that no one wants (released while its SSUBSCRIBE was
   * on the way, or its hold failed): SUNSUBSCRIBEd there. Left subscribed, its shard kept
   * sending its messages here, dropped, for as long as the connection lived (cork audit,
   * session 30: 147 room channels after a frozen master).
   */
  private unsubscribeStray (name: string, connection: Redis): void {
    if (this.wanted.has(name) || connection.status !== 'ready') return
    this.options.holdWrites?.(connection)
    connection.sunsubscribe(name).catch(() => {})
  }

  /** Waits for a connection that is still connecting, one wait shared by every caller. */
  private readonly readyWaits = new Map<Redis, Promise<boolean>>()

  /** A connection just made to a master is still connecting: wait for it, a while. */
  private async readyWithin (connection: Redis, timeoutMs: number): Promise<boolean> {
    if (connection.status === 'ready') return true
    if (connection.status === 'end' || connection.status === 'close') return false
    let wait = this.readyWaits.get(connection)
    if (wait === undefined) {
      wait = new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(timer)
          connection.off('ready', onReady)
          this.readyWaits.delete(connection)
          resolve(ok)
        }
        const onReady = () => done(true)
        const timer = setTimeout(() => done(false), timeoutMs)
        connection.once('ready', onReady)
      })
      this.readyWaits.set(connection, wait)
    }
    return await wait
  }

  /** Holds a channel for good (the control channel): placed now if possible, else by `reconcile`. */
  holdAlways (name: string): void {
    this.wanted.set(name, slotOf(name))
    this.lost.add(name) // its first placement is reported, like a restoration
    this.note(name)
    this.reconcile()
  }

  release (name: string): void {
    this.wanted.delete(name)
    this.lost.delete(name)
    const node = this.placed.get(name)
    this.placed.delete(name)
    this.note(name)
    const connection = node === undefined ? undefined : this.connections.get(node)
    if (connection?.status === 'ready') {
      this.options.holdWrites?.(connection)
      connection.sunsubscribe(name).catch((err: unknown) => this.options.log.warn({ err, name }, 'redis sunsubscribe failed'))
    }
  }

  /** Every master connection (for pings and PUBSUB SHARDCHANNELS). */
  masters (): Redis[] {
    return [...this.connections.values()]
  }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    await Promise.all([...this.connections.values()].map(async (connection) => {
      if (connection.status !== 'ready') return connection.disconnect()
      await connection.quit().catch(() => connection.disconnect())
    }))
    this.connections.clear()
  }

  /** Moves every held channel to its slot's current master; one run at a time, re-run if asked meanwhile. */
  reconcile (): void {
    if (this.closed) return
    if (this.reconciling) {
      this.again = true
      return
    }
    this.reconciling = true
    this.place().catch((err: unknown) => this.options.log.warn({ err }, 'redis cluster subscriptions: reconcile failed')).finally(() => {
      this.reconciling = false
      if (this.again) {
        this.again = false
        this.reconcile()
      }
    })
  }

  private async place (): Promise<void> {
    const bySlotOwner = new Map<string, string[]>()
    for (const [name, slot] of this.wanted) {
      const owner = this.cluster.slots[slot]?.[0]
      const current = this.placed.get(name)
      if (owner === undefined || current === owner) continue
      if (current !== undefined) {
        // The slot moved (resharding, or a failover seen before the old connection dropped).
        const old = this.connections.get(current)
        this.placed.delete(name)
        this.note(name)
        this.lost.add(name)
        if (old?.status === 'ready') old.sunsubscribe(name).catch(() => {})
      }
      const list = bySlotOwner.get(owner)
      if (list === undefined) bySlotOwner.set(owner, [name])
      else list.push(name)
    }
    const restored: string[] = []
    await Promise.all([...bySlotOwner].map(async ([owner, names]) => {
      const connection = this.connectionTo(owner)
      if (connection.status !== 'ready') return // its 'ready' runs reconcile again
      this.options.holdWrites?.(connection)
      // One SSUBSCRIBE per channel: a command may name channels of one slot only.
      await Promise.all(names.map(async (name) => {
        try {
          await connection.ssubscribe(name)
        } catch (err) {
          this.options.log.warn({ err, name, node: owner }, 'redis ssubscribe failed; retrying')
          return
        }
        if (!this.wanted.has(name) || connection.status !== 'ready') return this.unsubscribeStray(name, connection)
        this.placed.set(name, owner)
        this.note(name)
        if (this.lost.delete(name)) restored.push(name)
      }))
    }))
    if (restored.length > 0) this.options.onRestored(restored)
    this.prune()
  }

  /** Closes connections to nodes that are no longer masters and hold nothing (an old master back as a replica). */
  private prune (): void {
    const masters = new Set<string>()
    for (const owners of this.cluster.slots) if (owners?.[0] !== undefined) masters.add(owners[0])
    if (masters.size === 0) return // no slot map: nothing is known
    const used = new Set(this.placed.values())
    for (const [node, connection] of this.connections) {
      if (masters.has(node) || used.has(node)) continue
      this.connections.delete(node)
      connection.disconnect()
    }
  }

  private ownerOf (name: string): string | undefined {
    return this.cluster.slots[slotOf(name)]?.[0]
  }

  private refreshSlots (): void {
    try {
      this.cluster.refreshSlotsCache()
    } catch { /* a refresh already running: its 'refresh' reconciles */ }
  }

  private connectionTo (node: string): Redis {
    const existing = this.connections.get(node)
    if (existing !== undefined) return existing
    const colon = node.lastIndexOf(':')
    const connection = new Redis({
      host: node.slice(0, colon),
      port: Number(node.slice(colon + 1)),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      commandTimeout: this.options.commandTimeoutMs,
      connectTimeout: 5000,
      retryStrategy: reconnectBackoff,
      ...this.options.redisOptions,
      connectionName: `${this.options.name}:sub:${node}`.replace(/[^\w.:@-]/g, '_')
    })
    connection.on('smessage', (name: string, message: string) => this.options.onMessage(name, message))
    connection.on('ready', () => this.reconcile())
    logOutages(connection, `${this.options.name}:sub:${node}`, this.options.log, 'redis cluster subscriber connection')
    connection.on('close', () => {
      // A new connection starts with no subscriptions: everything placed here is lost.
      for (const [name, at] of this.placed) {
        if (at !== node) continue
        this.placed.delete(name)
        this.note(name)
        this.lost.add(name)
      }
      if (!this.closed) this.refreshSlots()
    })
    this.connections.set(node, connection)
    return connection
  }
}

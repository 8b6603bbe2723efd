import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { SLOTS } from './redis-slots.js'

export interface RedisLogger {
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
}

/** Reconnect backoff: 100 ms doubling to a 2 s ceiling, with jitter so instances spread out. */
export const reconnectBackoff = (attempt: number): number =>
  Math.min(100 * 2 ** Math.min(attempt - 1, 10), 2000) + Math.floor(Math.random() * 100)

export interface RedisConnectionOptions {
  /** Shown by CLIENT LIST; anything but `[\w.:@-]` becomes `_`. */
  name: string
  commandTimeoutMs: number
  /** Overrides (tests: a fixed retryStrategy). */
  redisOptions?: RedisOptions
  log: RedisLogger
}

/**
 * A Redis connection that fails fast instead of queueing: no offline queue, no retry or
 * re-send of a command that was in flight when the connection dropped (a publish script
 * must run at most once), and a command timeout for a Redis that hangs. It reconnects
 * forever with bounded backoff. An outage is logged once, and its end.
 */
export function failFastConnection (url: string, options: RedisConnectionOptions): Redis {
  const connection = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    autoResubscribe: false,
    commandTimeout: options.commandTimeoutMs,
    connectTimeout: 5000,
    retryStrategy: reconnectBackoff,
    ...options.redisOptions,
    connectionName: options.name.replace(/[^\w.:@-]/g, '_')
  })
  logOutages(connection, options.name, options.log, 'redis connection')
  return connection
}

/**
 * Logs an outage once, when it starts (not at every reconnect attempt), and its end. `what`
 * names the connection in the messages ("redis connection lost; retrying with backoff").
 */
export function logOutages (connection: Redis | Cluster, name: string, log: RedisLogger, what: string): void {
  let down = false
  connection.on('error', (err: Error) => {
    if (down || connection.status === 'end') return
    down = true
    log.warn({ err, connection: name }, `${what} lost; retrying with backoff`)
  })
  connection.on('ready', () => {
    if (!down) return
    down = false
    log.info({ connection: name }, `${what} is back`)
  })
}

/** A command connection: to one Redis, or to a Redis Cluster. */
export type RedisClient = Redis | Cluster

/** A `host:port` seed of REDIS_CLUSTER_NODES. */
export interface ClusterNode {
  host: string
  port: number
}

/**
 * The command connection to a Redis Cluster, failing fast as failFastConnection does: no
 * offline queue (a command while the cluster is not ready fails at once) and no retry of a
 * command in flight on a node that stops answering (it times out: a publish may have been
 * taken, and the caller is told so). MOVED/ASK redirections are followed, and the slot map
 * is checked every couple of seconds (watchSlotMap) and re-read whenever a node drops, so a
 * promoted replica is found without a restart. `onSlotCheck` runs after each check.
 *
 * One retry is ioredis's own (`retryDelayOnFailover`): a command still in flight on a master
 * dropped from the slot map is sent again to the slot's new master. If the old one ran it
 * (frozen, then woken), what it wrote is not the new master's: the promoted replica counts
 * in a new epoch (lib/broker/redis-layout.ts), and the old one's pub/sub copy, in its dead
 * epoch, is dropped by every subscriber (ChannelSequencer). Only a publish the old master
 * ran and replicated just before it failed is seen twice, on either side of the new epoch's
 * `system:reset`.
 */
export function clusterConnection (nodes: readonly ClusterNode[], options: RedisConnectionOptions & { onSlotCheck?: () => void }): Cluster {
  const connection = new Cluster([...nodes], {
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectBackoff,
    // Replaced by watchSlotMap: ioredis's own interval re-reads the whole map every time.
    slotsRefreshInterval: 0,
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    maxRedirections: 16,
    scaleReads: 'master',
    redisOptions: {
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: 5000,
      ...options.redisOptions,
      connectionName: options.name.replace(/[^\w.:@-]/g, '_')
    }
  })
  logOutages(connection, options.name, options.log, 'redis cluster connection')
  watchSlotMap(connection, SLOT_CHECK_INTERVAL_MS, options.onSlotCheck)
  return connection
}

/** How long readiness waits for each master of a cluster (clusterServes). */
export const CLUSTER_READY_TIMEOUT_MS = 1000

/**
 * Whether the cluster serves every slot, as readiness must say (GET /health/ready): every
 * master the client knows answers CLUSTER INFO within `timeoutMs` and calls the cluster
 * `ok` (a master whose slots no node serves makes every node say `fail`, and then even the
 * healthy shards refuse commands, as Redis's cluster-require-full-coverage has it). The
 * connections' own states said ready throughout such an outage (audit): a master down with
 * no replica to take over, and no channel held on it.
 */
export async function clusterServes (cluster: Cluster, timeoutMs = CLUSTER_READY_TIMEOUT_MS): Promise<boolean> {
  const masters = cluster.nodes('master')
  if (masters.length === 0 || !everySlotPlaced(cluster)) return false
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs) })
  const answers = Promise.all(masters.map(async (node) => {
    if (node.status !== 'ready') return false
    const info = await node.cluster('INFO') as string
    return /^cluster_state:ok\r?$/m.test(info)
  })).then((oks) => oks.every(Boolean), () => false)
  try {
    return await Promise.race([answers, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Whether the client's slot map gives every slot a master it knows. Right after a master
 * drops, the map is re-read, and until a replica is promoted the dead master's slots are
 * missing from it while the other masters still call the cluster ok.
 */
function everySlotPlaced (cluster: Cluster): boolean {
  const known = new Set(cluster.nodes('master').map((node) => `${node.options.host ?? ''}:${node.options.port ?? ''}`))
  const slots = cluster.slots
  for (let slot = 0; slot < SLOTS; slot++) {
    const master = slots[slot]?.[0]
    if (master === undefined || !known.has(master)) return false
  }
  return true
}

/** How often the slot map is checked (docs/operations.md: a failover is seen within this, after the election). */
export const SLOT_CHECK_INTERVAL_MS = 2000
/** A check unanswered this long counts as a change (the node asked may be the one that hangs). */
const SLOT_CHECK_TIMEOUT_MS = 1000

/**
 * Every `intervalMs`, asks one master the client is connected to for CLUSTER SLOTS and
 * compares the answer with the last one; only a change, or a check that fails, makes the
 * client re-read its slot map (refreshSlotsCache, which emits 'refresh'). ioredis's own
 * slotsRefreshInterval re-reads it unconditionally, each time over a new connection and
 * rebuilding its 16384-slot table (about 5 ms of CPU per instance every 2 s, and the
 * 'refresh' listeners after it), to find a change that almost never happened. Stops when
 * the client ends.
 */
export function watchSlotMap (cluster: Cluster, intervalMs: number, onCheck?: () => void): void {
  let last: string | undefined
  let checking = false
  const check = async (): Promise<void> => {
    const masters = cluster.nodes('master').filter((node) => node.status === 'ready')
    const node = masters[Math.floor(Math.random() * masters.length)]
    let answer: string | undefined
    if (node !== undefined) {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), SLOT_CHECK_TIMEOUT_MS) })
      answer = await Promise.race([node.cluster('SLOTS').then((slots) => JSON.stringify(slots), () => undefined), timeout])
      clearTimeout(timer)
    }
    if (answer === undefined || answer !== last) {
      last = answer
      try {
        cluster.refreshSlotsCache()
      } catch { /* a refresh already running */ }
    }
  }
  const timer = setInterval(() => {
    if (checking || cluster.status !== 'ready') return
    checking = true
    check().catch(() => {}).finally(() => {
      checking = false
      onCheck?.()
    })
  }, intervalMs)
  timer.unref()
  cluster.once('end', () => clearInterval(timer))
}

/** What the connection's current socket has read so far (0 between sockets). */
const bytesRead = (connection: Redis): number => (connection.stream as { bytesRead?: number } | undefined)?.bytesRead ?? 0

/**
 * Pings connections now and then: a Redis that hangs (or a dead peer behind a silent
 * network) keeps the socket open, so a ping that times out forces a reconnect, unless the
 * connection read something meanwhile. Redis answers a PING after everything queued before
 * it: on a subscriber connection behind a burst (other instances' events, an event loop busy
 * elsewhere) the answer comes late while messages keep arriving, and cutting that
 * connection would only lose its place and make every held channel catch up from history.
 */
export class ConnectionProbe {
  private readonly timer: NodeJS.Timeout
  /** Connections with a ping outstanding, or reconnecting after one failed. */
  private readonly probing = new Set<Redis>()

  constructor (private readonly connections: readonly Redis[], intervalMs: number, private readonly log: RedisLogger) {
    for (const connection of connections) connection.on('ready', () => this.probing.delete(connection))
    this.timer = setInterval(() => this.probe(), intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
  }

  private probe (): void {
    for (const connection of this.connections) {
      if (connection.status !== 'ready' || this.probing.has(connection)) continue
      this.probing.add(connection)
      const readBefore = bytesRead(connection)
      connection.ping().then(() => this.probing.delete(connection), (err: unknown) => {
        // Behind, not dead: a ping at the next interval asks again.
        if (connection.status !== 'ready' || bytesRead(connection) > readBefore) return this.probing.delete(connection)
        this.log.warn({ err }, 'redis did not answer a ping; reconnecting')
        connection.disconnect(true) // stays in `probing` until 'ready'
      })
    }
  }
}

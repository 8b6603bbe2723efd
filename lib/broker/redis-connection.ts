import { Cluster, Redis, type RedisOptions } from 'ioredis'

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
 * command in flight on its node (a publish script runs at most once). MOVED/ASK
 * redirections are followed, and the slot map is re-read every couple of seconds and
 * whenever a node drops, so a promoted replica is found without a restart.
 */
export function clusterConnection (nodes: readonly ClusterNode[], options: RedisConnectionOptions): Cluster {
  const connection = new Cluster([...nodes], {
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectBackoff,
    slotsRefreshInterval: 2000,
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
  return connection
}

/**
 * Pings connections now and then: a Redis that hangs (or a dead peer behind a silent
 * network) keeps the socket open, so a ping that times out forces a reconnect.
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
      connection.ping().then(() => this.probing.delete(connection), (err: unknown) => {
        if (connection.status !== 'ready') return this.probing.delete(connection)
        this.log.warn({ err }, 'redis did not answer a ping; reconnecting')
        connection.disconnect(true) // stays in `probing` until 'ready'
      })
    }
  }
}

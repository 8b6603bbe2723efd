import type { Cluster, Redis, RedisOptions } from 'ioredis'
import {
  type Broker, type BrokerOptions, BrokerUnavailableError, DEFAULT_IDEMPOTENCY_TTL_SECONDS, type DeliverFn, type HistoryResult,
  type IdempotencyClaim, IdempotencyConflictError, policyOf, type ReadOptions, type SincePosition, SourceMovedError
} from './broker.js'
import { ChannelSequencer } from './channel-sequencer.js'
import { sharedEncodingOf, type EventDraft, type PublishedEvent, type StreamPosition } from '../core/event.js'
import {
  type ClusterNode, clusterConnection, clusterServes, ConnectionProbe, failFastConnection, type RedisClient, type RedisLogger
} from './redis-connection.js'
import { ShardSubscribers } from './redis-shard-subscribers.js'
import { newEpochBase, REDIS_STREAM_FLOOR_SECONDS, streamRetentionSeconds } from './epochs.js'
import { RedisControl } from './redis-control.js'
import { PRESENCE_MESSAGE, RedisPresence } from './redis-presence.js'
import { PRESENCE_DEAD_INTERVALS } from '../core/presence.js'
import type { ChannelHistory, HistoryPolicy } from './history-policy.js'
import { databaseOf, decodeEntry, entryBody, globLiteral, payloadJsonOfEntry, randomName, RedisLayout } from './redis-layout.js'
import { pubsubBufferLimit, pubsubLimitTooLow, RECOMMENDED_PUBSUB_LIMIT } from './redis-server-config.js'
import { callFunction, type FunctionLibrary, functionLibrary, loadLibrary } from './redis-functions.js'
import { groupBySlot, movedMarksOf, publishBatchArgs, type PublishReply, replyAt } from './redis-publish-batch.js'
import { type ReadCall, ReadBatch, type ReadReply } from './redis-read-batch.js'
import { TurnCork } from './redis-turn-cork.js'
import { turnBatched } from './turn-batch.js'
import { Lingering } from './lingering.js'
import { RecentEntries } from './recent-entries.js'
import { SUBSCRIBER_BUDGET_BYTES, subscriberBudget, SubscriberPacing } from './subscriber-pacing.js'

export interface RedisBrokerOptions extends BrokerOptions {
  /** redis:// or rediss:// URL (a /db suffix selects the database); unused with `clusterNodes`. */
  url: string
  /** REDIS_CLUSTER_NODES: seeds of a Redis Cluster, instead of `url` (docs/operations.md, "Redis Cluster"). */
  clusterNodes?: readonly ClusterNode[]
  /** Prefix of every key and pub/sub channel, so deployments (and tests) can share a Redis. */
  keyPrefix: string
  /** Names the connections in CLIENT LIST (`<name>:cmd`, `<name>:read`, `<name>:sub`). */
  connectionName?: string
  /** How long a channel stays subscribed in Redis after its last local subscriber left (lib/broker/lingering.ts). Default 5 s. */
  unsubscribeDelayMs?: number
  /** At most this many channels linger at once, the longest-lingering released first. Default 20 000 (MAX_CONNECTIONS). */
  lingerLimit?: number
  /** This instance's name: its presence share is filed under it. */
  nodeId?: string
  /** PRESENCE_INTERVAL_MS: an instance silent for 1.5 intervals stops counting in presence. */
  presenceIntervalMs?: number
  /** A command unanswered this long fails (so a hung Redis means 503s, not stuck requests). */
  commandTimeoutMs?: number
  /** How often each connection is pinged, to notice a Redis that hangs without closing. */
  probeIntervalMs?: number
  /**
   * HISTORY_CACHE_BYTES: held channels' recent entries kept in memory to answer resumes and
   * `rewind` without Redis (lib/broker/recent-entries.ts); 0 turns it off. Default 32 MiB.
   */
  historyCacheBytes?: number
  /** Told how long a publish waited for this instance's subscriber to catch up (lib/broker/subscriber-pacing.ts). */
  onPublishPaced?: (seconds: number) => void
  /** Overrides of the ioredis options (tests: a fixed retryStrategy). */
  redisOptions?: RedisOptions
  log?: RedisLogger
}

const SUBSCRIBE_BATCH = 500
/**
 * A channel stays subscribed this long after its last local subscriber left. Our client's
 * first three reconnect attempts after a drop come within ~3.5 s (client/reconnect-policy.ts),
 * and a reconnect storm of a few thousand clients takes a few seconds to resume: within the
 * linger, a client finds its own channel still held and resumes without Redis.
 */
const DEFAULT_LINGER_MS = 5000
const DEFAULT_LINGER_LIMIT = 20_000

/** A channel's SUBSCRIBE or UNSUBSCRIBE, by its pub/sub name. */
interface SubscriptionChange {
  name: string
  subscribe: boolean
}

/** A pub/sub message beyond its entry and channel: the key prefix, `epoch,offset,ms,`, RESP framing. */
const PUBSUB_MESSAGE_OVERHEAD = 96
const DEFAULT_HISTORY_CACHE_BYTES = 32 * 1024 * 1024
/**
 * Redis expires a channel's history this long after its last publish; the copy here is
 * used only while it is younger than that by this margin (it was received a little after
 * the publish), so it never answers with entries Redis no longer has.
 */
const HISTORY_EXPIRY_MARGIN_MS = 1000
/**
 * Entries read from Redis carry Redis's clock: they count as published this much earlier,
 * for the clocks of Redis and of this host may differ (NTP keeps them well within it).
 */
const CLOCK_SKEW_MARGIN_MS = 2000
/** How long a history read waits for pub/sub to bring events it counted before reading them itself. */
const DELIVERY_GRACE_MS = 250

const toError = (err: unknown): Error => err instanceof Error ? err : new Error(String(err))

const noopLog: RedisLogger = { info () {}, warn () {} }

/** The event a publish reply stands for: the draft at its place (the first one's, when replayed). */
function eventOf (draft: EventDraft, [epoch, offset, , replayed]: PublishReply, ts: string): PublishedEvent {
  const event: PublishedEvent = { channel: draft.channel, type: draft.type, payload: draft.payload, offset: Number(offset), epoch, ts }
  // 1: a dedupe key seen before (the first one's place); 2: an origin published before (no place kept).
  if (Number(replayed) !== 0) event.replayed = true
  return event
}

/**
 * An entry read (from Redis, or from the events kept in memory), decoded with the frames a
 * replay sends to be built around the payload's text in the entry, once for every reader
 * (sharedEncodingOf), not encoded again. (The HTTP history route's events serialize as JSON;
 * the encoding, lazy, is then never built.)
 */
function decodedForReplay (channel: string, entry: string): PublishedEvent {
  const event = decodeEntry(channel, entry)
  sharedEncodingOf(event, payloadJsonOfEntry(entry))
  return event
}

/**
 * What an entry kept decoded costs besides its text (RecentEntries' budget): the event with
 * its parsed payload, its shared encoding, and its WebSocket frame once replayed (bytes of
 * its own: sharedEncodingOf). Measured with `process.memoryUsage()` over 50k entries of 283
 * characters, with other buffers made and dropped between them: 1141 bytes each; an SSE
 * replay adds its `data:` text (about the entry's length), hence five times, not four.
 */
const DECODED_ENTRY_FACTOR = 5
const DECODED_ENTRY_OVERHEAD_BYTES = 200

/** An event's entry as Redis keeps it (lib/broker/redis-layout.ts), for one that came without it (a gap filled from history). */
const entryOfEvent = (event: PublishedEvent): string => `${event.epoch},${event.offset},${Date.parse(event.ts)},${entryBody(event.type, JSON.stringify(event.payload))}`

/** How long a channel's meta hash outlives its last publish, and its epoch bucket (lib/broker/epochs.ts). */
const retentionOf = (history: ChannelHistory): number => streamRetentionSeconds(history.ttlSeconds, REDIS_STREAM_FLOOR_SECONDS)

/** The connections a client's commands go out on: one Redis, or a cluster's masters (as they are now). */
function nodesOf (client: RedisClient): () => Iterable<Redis> {
  return 'nodes' in client ? () => client.nodes('master') : () => [client]
}

/** At most one cluster readiness check this often (servesAll). */
const SERVES_CHECK_INTERVAL_MS = 1000

/**
 * The broker for many instances (see lib/broker/redis-layout.ts for keys, scripts and the epoch
 * rule). Three connections (on a cluster, to each master): commands (publishes, presence,
 * control), history reads, and a subscriber that holds the pub/sub channels of this
 * instance's locally subscribed channels only.
 *
 * Failure: commands are never queued while Redis is away (no offline queue, no retry of
 * a command in flight, a command timeout), so a publish rejects at once with
 * BrokerUnavailableError (HTTP 503) instead of hanging or resolving late. The
 * connections reconnect forever with bounded backoff; once the subscriber is back it
 * re-subscribes every held channel (only then is the broker ready again) and the
 * sequencer delivers, from history, what was published meanwhile.
 */
export class RedisBroker implements Broker {
  readonly kind = 'redis'
  /** A batch script runs a few µs per event with Redis held: 500 keep that to milliseconds. */
  readonly maxBatchSize = 500
  readonly keyPrefix: string
  readonly layout: RedisLayout
  /** The command connection; also used for cluster stats (lib/ops/node-registry.ts). */
  readonly redis: RedisClient
  private readonly commands: RedisClient
  /** The publish and read functions (lib/broker/redis-functions.ts). */
  private readonly library: FunctionLibrary
  /** A turn's commands leave in one write per connection: publishes, presence reads, shard (un)subscribes. */
  private readonly turnCork: TurnCork
  /**
   * History reads go on a connection of their own (on a cluster, a second connection to
   * each master). Why: Redis answers a connection's commands in order, so a publish sent
   * behind a rewind's reply of megabytes waited until all of it had been read: five users
   * rewinding 6 MB histories over and over held services' publishes a second (p99), where
   * their own deliveries took a third of that (bench/README.md, "Session 31").
   */
  readonly historyConnection: RedisClient
  /** A turn's reads leave in one write per node of the read connection. */
  private readonly readCork: TurnCork
  /** One Redis: the subscriber connection. */
  private readonly subscriber?: Redis
  /** A Redis Cluster: a subscriber connection per master, for sharded pub/sub. */
  private readonly shards?: ShardSubscribers
  private readonly sequencer: ChannelSequencer
  /**
   * SUBSCRIBE and UNSUBSCRIBE on one Redis, a turn's channels in one command each, in the
   * order they were asked for: a storm of reconnects to a new instance subscribes every
   * user's own channel at once, and their lingers end together after a storm.
   */
  private readonly changeSubscriptions = turnBatched<SubscriptionChange>(async (changes) => {
    const subscriber = this.subscriber
    if (subscriber === undefined) return
    const subscribed: Array<Promise<unknown>> = []
    // Consecutive changes of one kind go as one command (up to SUBSCRIBE_BATCH channels);
    // ioredis writes commands in the order they are called, so Redis sees the order asked.
    for (let i = 0; i < changes.length;) {
      const subscribe = changes[i].subscribe
      const names: string[] = []
      while (i < changes.length && changes[i].subscribe === subscribe && names.length < SUBSCRIBE_BATCH) names.push(changes[i++].name)
      if (subscribe) {
        subscribed.push(subscriber.subscribe(...names))
      } else if (subscriber.status === 'ready') {
        // Not ready: a new connection starts with no subscriptions (restoreSubscriptions holds `held`).
        subscriber.unsubscribe(...names).catch((err: unknown) => this.log.warn({ err, channels: names.length }, 'redis unsubscribe failed'))
      }
    }
    await Promise.all(subscribed)
  })

  /** History reads, a turn's together (lib/broker/redis-read-batch.ts). */
  private readonly reads: ReadBatch
  /** Held channels' last entries, as delivered: reads they can answer skip Redis. */
  private readonly recentEntries: RecentEntries<PublishedEvent>
  /**
   * The raw entry of an event decoded from pub/sub or read, or built from a publish reply, while
   * the event lives: kept as the channel's copy, and its payload's text is what frames are written around.
   */
  private readonly rawEntries = new WeakMap<PublishedEvent, string>()
  /** Publishes wait while too much of this instance's own is unread on its subscriber (lib/broker/subscriber-pacing.ts). */
  private readonly pacing: SubscriberPacing
  /** Resolves once the server's settings were read at the first connect (and any warning said). */
  readonly serverSettingsChecked: Promise<void>
  /** Channels held in Redis (subscribed, or being subscribed), lingering ones included. */
  private readonly held = new Set<string>()
  private readonly subscribing = new Map<string, Promise<void>>()
  /** Held channels no local subscriber holds any more, until they are released (lib/broker/lingering.ts). */
  private readonly lingering: Lingering
  private readonly deliver: DeliverFn
  private readonly policy: HistoryPolicy
  private readonly dedupeTtlSeconds: number
  readonly presence: RedisPresence
  readonly control: RedisControl
  private readonly log: RedisLogger
  private readonly probe?: ConnectionProbe
  /** True once the subscriber connection holds every channel in `held`. */
  private restored = false
  private closed = false

  constructor (private readonly options: RedisBrokerOptions) {
    this.keyPrefix = options.keyPrefix
    const clusterNodes = options.clusterNodes
    this.layout = new RedisLayout(options.keyPrefix, clusterNodes === undefined ? databaseOf(options.url) : 0, clusterNodes !== undefined)
    this.deliver = options.deliver
    this.lingering = new Lingering(options.unsubscribeDelayMs ?? DEFAULT_LINGER_MS, options.lingerLimit ?? DEFAULT_LINGER_LIMIT, (channel) => this.release(channel))
    this.policy = policyOf(options)
    this.dedupeTtlSeconds = options.idempotencyTtlSeconds ?? DEFAULT_IDEMPOTENCY_TTL_SECONDS
    this.log = options.log ?? noopLog
    this.pacing = new SubscriberPacing(SUBSCRIBER_BUDGET_BYTES, async () => await this.pingSubscribers(), options.onPublishPaced)
    const name = options.connectionName ?? `rtg-${randomName()}`
    const connection = { commandTimeoutMs: options.commandTimeoutMs ?? 5000, redisOptions: options.redisOptions, log: this.log }
    this.commands = (clusterNodes === undefined
      ? failFastConnection(options.url, { ...connection, name: `${name}:cmd` })
      : clusterConnection(clusterNodes, { ...connection, name: `${name}:cmd`, onSlotCheck: () => this.preloadCluster?.() }))
    // On a cluster the functions publish with SPUBLISH, into the channel's shard.
    const library = this.library = functionLibrary(clusterNodes !== undefined)
    const commands = this.commands
    this.turnCork = new TurnCork(nodesOf(commands))
    this.redis = this.commands
    const reads = this.historyConnection = (clusterNodes === undefined
      ? failFastConnection(options.url, { ...connection, name: `${name}:read` })
      : clusterConnection(clusterNodes, { ...connection, name: `${name}:read` }))
    this.readCork = new TurnCork(nodesOf(reads))
    this.reads = new ReadBatch(this.runReads, (channel, entry) => {
      const event = decodedForReplay(channel, entry)
      this.rawEntries.set(event, entry)
      return event
    })
    this.recentEntries = new RecentEntries(options.historyCacheBytes ?? DEFAULT_HISTORY_CACHE_BYTES, (channel) => this.policy.of(channel).size, {
      decode: decodedForReplay,
      keptBytes: (entry) => DECODED_ENTRY_FACTOR * entry.length + DECODED_ENTRY_OVERHEAD_BYTES
    }, (channel) => this.heldLifetimeMs(channel))
    const live = (channel: string): boolean => this.held.has(channel) && !this.lingering.has(channel)
    this.sequencer = new ChannelSequencer((channel, since) => this.read(channel, since), (event) => {
      let entry = this.rawEntries.get(event)
      // Lingering channels too: still subscribed, their copy stays whole.
      if (this.recentEntries.enabled) this.recentEntries.append(event.channel, event, entry ??= entryOfEvent(event))
      // The frames are written around the payload's text in the entry, not encoded again.
      if (live(event.channel)) this.deliver(event, entry === undefined ? undefined : payloadJsonOfEntry(entry))
    }, (channel, position) => {
      this.recentEntries.reset(channel, position)
      if (live(channel)) options.reset?.(channel, position)
    }, this.log)
    // Catching up needs the read connection: if it came back last, catch up now (on a
    // cluster always: a shard restored meanwhile skipped its catch-up, review session 31;
    // a fill already under way makes catchUp a no-op).
    reads.on('ready', () => { if (this.restored || clusterNodes !== undefined) this.catchUpAll() })
    const publishOn = clusterNodes === undefined
      ? async (pubsub: string, message: string) => await this.commands.publish(pubsub, message)
      : async (pubsub: string, message: string) => await this.commands.spublish(pubsub, message)
    this.control = new RedisControl(this.commands, this.layout, publishOn)
    // Filed under this run of the instance, not its name alone: a restart under the same NODE_ID
    // (docker-compose's fixed names) found the last run's shares alive again, users long gone
    // counted for hours (audit). The last run's shares now die with its heartbeat.
    this.presence = new RedisPresence(this.commands, this.layout, `${options.nodeId ?? name}#${randomName()}`,
      PRESENCE_DEAD_INTERVALS * (options.presenceIntervalMs ?? 2000), publishOn, () => this.turnCork.holdCommands())
    this.serverSettingsChecked = new Promise((resolve) => {
      this.commands.once('ready', () => { void this.checkServerSettings().finally(resolve) })
    })
    if (clusterNodes === undefined) {
      const subscriber = this.subscriber = failFastConnection(options.url, { ...connection, name: `${name}:sub` })
      subscriber.on('ready', () => { void this.restoreSubscriptions(subscriber) })
      subscriber.on('close', () => {
        this.restored = false
        this.pacing.reset()
      })
      subscriber.on('message', (pubsub: string, entry: string) => this.onMessage(pubsub, entry))
      // Sent before any call can follow on the new connection (no offline queue): a Redis
      // restarted without its data has no functions either.
      const commands = this.commands as Redis
      commands.on('ready', () => { loadLibrary(commands, library).catch(() => {}) })
      this.probe = new ConnectionProbe([this.commands as Redis, reads as Redis, subscriber], options.probeIntervalMs ?? 2000, this.log)
    } else {
      this.shards = new ShardSubscribers(this.commands as Cluster, {
        ...connection,
        name,
        onMessage: (pubsub, entry) => this.onMessage(pubsub, entry),
        onRestored: (names) => this.onRestored(names),
        holdWrites: (connection) => this.turnCork.hold(connection)
      })
      // From its first placement on, no disconnect or revocation is missed.
      this.shards.holdAlways(this.layout.controlChannel)
      const cluster = this.commands as Cluster
      const preload = this.preloadCluster = () => { void this.preloadFunctions(cluster) }
      cluster.on('ready', preload)
      cluster.on('refresh', preload)
    }
  }

  /** One event: a batch of one (one script, one set of rules). */
  async publish (draft: EventDraft): Promise<PublishedEvent> {
    return (await this.publishBatch([draft]))[0]
  }

  /**
   * A cluster's claim, in a call of its own just before the publish (its key cannot share a
   * slot with every channel of a request). A gateway that dies between the two leaves the
   * key taken without its events: the retry with the same body publishes them (the claim
   * says `repeat`, the dedupe keys find nothing), one with another body gets 422.
   */
  private async claimApart (claim: IdempotencyClaim): Promise<void> {
    let previous: string | null
    try {
      // One command: set if absent, and say what was there (Redis 7: SET … NX GET).
      previous = await this.commands.call('SET', this.layout.claimKey(claim.scope), claim.fingerprint, 'NX', 'GET', 'EX', this.dedupeTtlSeconds) as string | null
    } catch (err) {
      throw new BrokerUnavailableError('redis did not take the idempotency key', { cause: err, mayHaveBeenTaken: !refusedUnsent(err) })
    }
    if (previous !== null && previous !== claim.fingerprint) throw new IdempotencyConflictError()
  }

  /**
   * One script run for the whole batch (PUBLISH_BATCH_SCRIPT): one round trip, all or
   * nothing; a claim is taken in the same run (on a cluster, claimApart).
   */
  async publishBatch (drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]> {
    if (this.closed || this.commands.status !== 'ready') throw new BrokerUnavailableError('redis is not connected')
    if (drafts.length === 0) return []
    const clustered = this.shards !== undefined
    if (claim !== undefined && clustered) await this.claimApart(claim)
    let replies: PublishReply[]
    const bodies = new Array<string>(drafts.length)
    // On a cluster, one script run per slot, in parallel: each is all or nothing, the
    // batch is not (a retry is safe where drafts carry dedupe keys or a Kafka origin).
    const groups = groupBySlot(drafts, this.layout)
    const calls = groups.map((group) => {
      const call = publishBatchArgs(group.drafts, this.layout, this.policy, retentionOf, this.dedupeTtlSeconds, clustered ? undefined : claim)
      group.indexes.forEach((index, i) => { bodies[index] = call.bodies[i] })
      return call
    })
    const returning = this.bytesComingBack(drafts, bodies)
    await this.pacing.admit(returning)
    try {
      this.turnCork.holdCommands()
      const parts = await Promise.all(calls.map(async ({ keys, args }) =>
        await callFunction<Array<string | number>>(this.commands, this.library, this.library.publish, keys, args)))
      if (parts[0].length === 1 && parts[0][0] === 'conflict') throw new IdempotencyConflictError()
      let moved: Map<string, string> | undefined
      parts.forEach((part, g) => {
        for (const [key, text] of movedMarksOf(part, calls[g].markKeys) ?? []) (moved ??= new Map()).set(key, text)
      })
      if (moved !== undefined) throw new SourceMovedError(moved)
      replies = new Array<PublishReply>(drafts.length)
      groups.forEach((group, g) => group.indexes.forEach((index, i) => { replies[index] = replyAt(parts[g], i) }))
    } catch (err) {
      if (err instanceof IdempotencyConflictError || err instanceof SourceMovedError) throw err
      throw new BrokerUnavailableError('redis did not take the publish', { cause: err, mayHaveBeenTaken: !refusedUnsent(err) })
    } finally {
      this.pacing.answered(returning)
    }
    // Events of one script run share a handful of milliseconds: one ISO string for each.
    let lastMs = ''
    let lastTs = ''
    const events = drafts.map((draft, i) => {
      const ms = replies[i][2]
      if (ms !== lastMs) {
        lastMs = ms
        lastTs = new Date(Number(ms)).toISOString()
      }
      return eventOf(draft, replies[i], lastTs)
    })
    // Delivered in one turn: the hub's write batching (lib/core/write-batch.ts) gives each
    // socket at most two writes for the whole batch.
    events.forEach((event, i) => this.deliverOwn(event, replies[i][2], bodies[i]))
    return events
  }

  /**
   * About what these entries add to this instance's subscriber connection: those of channels
   * it holds come back there (a pub/sub message: the entry, its channel's name, framing).
   */
  private bytesComingBack (drafts: readonly EventDraft[], bodies: readonly string[]): number {
    let bytes = 0
    for (let i = 0; i < drafts.length; i++) {
      if (this.held.has(drafts[i].channel)) bytes += bodies[i].length + drafts[i].channel.length + PUBSUB_MESSAGE_OVERHEAD
    }
    return bytes
  }

  /** PINGs every subscriber connection: true once all answered (lib/broker/subscriber-pacing.ts). */
  private async pingSubscribers (): Promise<boolean> {
    const connections = this.shards?.masters() ?? (this.subscriber === undefined ? [] : [this.subscriber])
    if (connections.length === 0 || connections.some((c) => c.status !== 'ready')) return false
    try {
      await Promise.all(connections.map(async (c) => await c.ping()))
      return true
    } catch {
      return false
    }
  }

  /**
   * This instance's own event, delivered from the script's reply rather than after a round
   * trip through pub/sub (ChannelSequencer.pushOwn keeps the channel's order with other
   * instances' events); its pub/sub copy is then dropped undecoded (onMessage). The copy
   * comes on another connection and is read first about half the time (bench/README.md,
   * "Session 34"): then the event was delivered from it, and its entry is not kept again.
   */
  private deliverOwn (event: PublishedEvent, ms: string, body: string): void {
    if (event.replayed === true || !this.held.has(event.channel)) return
    if (this.sequencer.handedOn(event.channel, event.epoch, event.offset)) return
    this.rawEntries.set(event, `${event.epoch},${event.offset},${ms},${body}`)
    this.sequencer.pushOwn(event)
  }

  async subscribe (channel: string): Promise<void> {
    if (!this.isReady()) throw new BrokerUnavailableError('redis is not connected')
    // Left a moment ago and still held in Redis: nothing to do, no flapping.
    if (this.lingering.cancel(channel)) return
    if (this.held.has(channel)) return await this.subscribing.get(channel)
    this.held.add(channel)
    const pending = this.holdChannel(channel)
    this.subscribing.set(channel, pending)
    // Released and subscribed again while this one was on the way: its failure is not the newer one's.
    const latest = (): boolean => this.subscribing.get(channel) === pending
    try {
      await pending
    } catch (err) {
      if (latest()) this.release(channel)
      throw err
    } finally {
      if (latest()) this.subscribing.delete(channel)
    }
  }

  async unsubscribe (channel: string): Promise<void> {
    if (this.held.has(channel)) this.lingering.start(channel)
  }

  async position (channel: string): Promise<StreamPosition> {
    return (await this.read(channel)).position
  }

  /**
   * For a subscribed channel, resolves only once live delivery has reached the position
   * read: the pub/sub copy of an event can arrive after a history read that already
   * counted it, and the hub tells replayed from live events by that position.
   */
  async history (channel: string, since?: SincePosition, options?: ReadOptions): Promise<HistoryResult> {
    return await this.readHeld(channel, since, 0, options?.fromDelivery === true)
  }

  async recent (channel: string, count: number, options?: ReadOptions): Promise<HistoryResult> {
    return await this.readHeld(channel, undefined, count, options?.fromDelivery === true)
  }

  /**
   * A subscriber's read of a held channel may be answered from memory (readLocally). One
   * read from Redis, once delivery has reached its position, becomes the channel's copy
   * (keepRead): the reads that follow, the next client's resume or `rewind`, need no Redis.
   */
  private async readHeld (channel: string, since: SincePosition | undefined, last: number, fromDelivery: boolean): Promise<HistoryResult> {
    if (fromDelivery && this.recentEntries.enabled) {
      // Only while Redis is up (isReady), so an outage still answers 503 as before.
      const local = this.readLocally(channel, since, last)
      if (local !== undefined) return local
    }
    const result = await this.read(channel, since, last)
    if (this.held.has(channel)) {
      await this.sequencer.reached(channel, result.position, DELIVERY_GRACE_MS)
      this.keepRead(channel, result)
    }
    return result
  }

  /** A read from Redis; for a held channel, the position it reports is noted (ChannelSequencer.settledAt). */
  private async read (channel: string, since?: SincePosition, last = 0): Promise<HistoryResult> {
    if (this.closed || this.historyConnection.status !== 'ready') throw new BrokerUnavailableError('redis is not connected')
    let result: HistoryResult
    try {
      result = await this.reads.read(channel, since, last)
    } catch (err) {
      throw err instanceof BrokerUnavailableError ? err : new BrokerUnavailableError('redis did not answer a history read', { cause: err })
    }
    if (this.held.has(channel)) this.sequencer.stored(channel, result.position)
    return result
  }

  /**
   * A read of a held channel answered from what live delivery brought, when that is exactly
   * what Redis would answer: delivery is settled (no gap being filled, the subscriber
   * connection up), `since` is in the same epoch and no further than delivery, and the
   * entries asked for are all still here and younger than Redis's expiry of them. The
   * position is where delivery stands: anything published after it is still on its way
   * through pub/sub and reaches the reader live. Otherwise undefined: Redis is read.
   */
  /** How long after a channel's last event what is held of it may still answer: its history TTL, less the delivery margin. */
  private heldLifetimeMs (channel: string): number {
    return this.policy.of(channel).ttlSeconds * 1000 - HISTORY_EXPIRY_MARGIN_MS
  }

  private readLocally (channel: string, since: SincePosition | undefined, last: number): HistoryResult | undefined {
    const position = this.held.has(channel) ? this.sequencer.settledAt(channel) : undefined
    if (position === undefined || !this.isReady()) return undefined
    if (since === undefined && last === 0) return { events: [], position, recovered: true }
    if (since !== undefined) {
      if (since.epoch !== position.epoch || since.offset < 0 || since.offset > position.offset) return undefined
      if (since.offset === position.offset) return { events: [], position, recovered: true }
    }
    const view = this.recentEntries.view(channel)
    if (view === undefined || view.epoch !== position.epoch || view.base + view.count !== position.offset) return undefined
    if (Date.now() >= view.appendedAt + this.heldLifetimeMs(channel)) return undefined
    let after: number
    if (since !== undefined) {
      if (since.offset < view.base) return undefined
      after = since.offset
    } else {
      // Fewer than asked is the answer only when they are the epoch's every event.
      if (view.count < last && view.base > 0) return undefined
      after = Math.max(view.base, position.offset - last)
    }
    return { events: this.recentEntries.after(channel, after), position, recovered: true }
  }

  /** READ_SCRIPT's keys and arguments for a call. */
  private readArgs (call: ReadCall): { keys: string[], args: Array<string | number> } {
    const keys = this.layout.keys(call.channel)
    return {
      keys: [keys.meta, keys.history, this.layout.baseKeyOf(call.channel)],
      args: [newEpochBase(), retentionOf(this.policy.of(call.channel)), call.since, call.epoch, call.last]
    }
  }

  /**
   * A turn's reads (lib/broker/redis-read-batch.ts): their FCALLs leave in one write per
   * node (TurnCork), each answered as its reply arrives. A read that meets a Redis that lost
   * its functions loads them and is made again (callFunction): reads change nothing, so the
   * retry is safe.
   */
  private readonly runReads = async (calls: readonly ReadCall[]): Promise<Array<ReadReply | Error>> => {
    const single = async (call: ReadCall): Promise<ReadReply | Error> => {
      const { keys, args } = this.readArgs(call)
      return await callFunction<ReadReply>(this.historyConnection, this.library, this.library.read, keys, args).catch((err: unknown) => toError(err))
    }
    return await Promise.all(this.readCork.together(() => calls.map(single)))
  }

  /**
   * Channels with a subscriber on some instance: each instance holds the pub/sub channel of
   * every channel its clients hold, so Redis counts them without double counting (on a
   * cluster, each master its shard's channels).
   */
  async distinctChannels (): Promise<number> {
    const pattern = `${globLiteral(this.layout.pubsubPrefix)}*`
    if (this.shards === undefined) return (await this.commands.pubsub('CHANNELS', pattern) as string[]).length
    const counts = await Promise.all((this.commands as Cluster).nodes('master').map(async (node) =>
      (await node.pubsub('SHARDCHANNELS', pattern) as string[]).length))
    return counts.reduce((a, b) => a + b, 0)
  }

  isReady (): boolean {
    if (this.closed || this.commands.status !== 'ready' || this.historyConnection.status !== 'ready') return false
    if (this.shards !== undefined) return this.functionsPreloaded && this.shards.isReady()
    return this.restored && this.subscriber?.status === 'ready'
  }

  /** The last cluster readiness check (servesAll): under way, or its answer and when it came. */
  private servesCheck?: { answer: Promise<boolean>, at: number }

  /**
   * On a cluster, readiness also asks every master (clusterServes); one Redis: isReady says
   * it all. One check a second at most, however often /health/ready is asked (it needs no
   * token): requests meanwhile share the last answer.
   */
  async servesAll (): Promise<boolean> {
    if (this.shards === undefined || !this.isReady()) return this.isReady()
    const now = Date.now()
    if (this.servesCheck === undefined || now - this.servesCheck.at >= SERVES_CHECK_INTERVAL_MS) {
      this.servesCheck = { answer: clusterServes(this.commands as Cluster), at: now }
    }
    return await this.servesCheck.answer
  }

  /** Resolves true once ready, false if not within `timeoutMs` (start-up: don't open the doors before Redis). */
  async waitUntilReady (timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.isReady() && !this.closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    return this.isReady()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.probe?.stop()
    this.lingering.clear()
    // Forgetting releases any history read still waiting on live delivery.
    for (const channel of this.held) this.sequencer.forget(channel)
    this.held.clear()
    await this.shards?.close()
    const connections: RedisClient[] = [this.commands, this.historyConnection, ...this.subscriber === undefined ? [] : [this.subscriber]]
    await Promise.all(connections.map(async (connection) => {
      if (connection.status !== 'ready') return connection.disconnect()
      await connection.quit().catch(() => connection.disconnect())
    }))
  }

  /** SUBSCRIBE, then note where the channel stands so a later gap can be told from a start. */
  private async holdChannel (channel: string): Promise<void> {
    try {
      const pubsub = this.layout.pubsubName(channel)
      if (this.shards !== undefined) await this.shards.hold(pubsub)
      else await this.changeSubscriptions({ name: pubsub, subscribe: true })
      const position = await this.position(channel)
      // Released meanwhile (its last subscriber left and the linger ran out): nothing to count.
      if (this.held.has(channel)) this.sequencer.start(channel, position)
    } catch (err) {
      throw err instanceof BrokerUnavailableError ? err : new BrokerUnavailableError('redis did not take a subscribe', { cause: err })
    }
  }

  /**
   * A read from Redis answered at the position delivery stands at becomes the channel's copy,
   * unless the copy already reaches further back. Its entries carry Redis's clock, so they
   * count as published CLOCK_SKEW_MARGIN_MS earlier (the two hosts' clocks may differ).
   */
  private keepRead (channel: string, read: HistoryResult): void {
    const { position, events } = read
    if (!read.recovered || events.length === 0 || !this.recentEntries.enabled) return
    const settled = this.sequencer.settledAt(channel)
    if (settled?.epoch !== position.epoch || settled.offset !== position.offset) return
    // Consecutive offsets up to the position (a history written under another size policy may have holes).
    if (events.some((e, i) => e.offset !== position.offset - events.length + i + 1)) return
    const view = this.recentEntries.view(channel)
    if (view !== undefined && view.epoch === position.epoch && view.base + view.count === position.offset && view.base <= events[0].offset - 1) return
    const publishedAt = Math.min(Date.parse(events[events.length - 1].ts), Date.now()) - CLOCK_SKEW_MARGIN_MS
    this.recentEntries.seed(channel, position, events.map((e) => this.rawEntries.get(e) ?? entryOfEvent(e)), publishedAt)
  }

  private release (channel: string): void {
    this.lingering.cancel(channel)
    if (!this.held.delete(channel)) return
    this.sequencer.forget(channel)
    this.recentEntries.forget(channel)
    if (this.shards !== undefined) return this.shards.release(this.layout.pubsubName(channel))
    this.changeSubscriptions({ name: this.layout.pubsubName(channel), subscribe: false }).catch(() => {}) // a failed UNSUBSCRIBE is logged where it is sent
  }

  /** After a (re)connect: SUBSCRIBE every held channel, then catch up on what was missed. */
  private async restoreSubscriptions (subscriber: Redis): Promise<void> {
    const channels = [...this.held]
    try {
      // The control channel first: from here on no disconnect or revocation is missed.
      await subscriber.subscribe(this.layout.controlChannel)
      for (let i = 0; i < channels.length; i += SUBSCRIBE_BATCH) {
        await subscriber.subscribe(...channels.slice(i, i + SUBSCRIBE_BATCH).map((c) => this.layout.pubsubName(c)))
      }
    } catch (err) {
      // The connection dropped again; the next 'ready' retries.
      this.log.warn({ err, channels: channels.length }, 'redis re-subscribe failed')
      return
    }
    if (subscriber.status !== 'ready') return
    this.restored = true
    this.resyncControl()
    if (this.historyConnection.status === 'ready') this.catchUpAll()
    if (channels.length > 0) this.log.info({ channels: channels.length }, 'redis subscriptions restored')
  }

  /** Cluster masters that hold the functions since their connection last came up. */
  private readonly functionNodes = new WeakSet<Redis>()
  /** A cluster broker is ready only once its first preload ran. */
  private functionsPreloaded = false
  /** Loads the functions where missing: at 'ready', after a slot map re-read, and at every slot map check. */
  private preloadCluster?: () => void

  /**
   * Loads the function library on every master of the cluster once the cluster is ready and
   * again, for masters that came (back) since, after every slot map re-read and every slot
   * map check (every 2 s, watchSlotMap in lib/broker/redis-connection.ts). Replicas get it
   * through replication, so a promoted replica holds it; a master that lost it in between
   * answers "Function not found", and callFunction loads it and calls again.
   */
  private async preloadFunctions (cluster: Cluster): Promise<void> {
    if (cluster.status !== 'ready') return
    await Promise.all(cluster.nodes('master').map(async (node) => {
      if (this.functionNodes.has(node)) return
      try {
        await loadLibrary(node, this.library)
      } catch {
        return // the node is away: the next refresh tries again
      }
      if (this.functionNodes.has(node)) return
      this.functionNodes.add(node)
      node.once('close', () => this.functionNodes.delete(node))
    }))
    this.functionsPreloaded = true
  }

  /** A control resync waits for the command connection (once, however often it is asked). */
  private resyncPending = false

  /**
   * The control channel was subscribed again: messages may have been missed meanwhile, so the
   * revocations are read again, with the command connection. If that one is not up yet (both
   * dropped, the subscriber came back first), once it is: read at once it would fail, and a
   * revocation missed while away would stay missed until the next reconnect.
   */
  private resyncControl (): void {
    if (this.commands.status === 'ready') return this.control.resynced()
    if (this.resyncPending) return
    this.resyncPending = true
    this.commands.once('ready', () => {
      this.resyncPending = false
      this.control.resynced()
    })
  }

  /** A cluster's shard channels subscribed again after a loss (ShardSubscribers): catch each up. */
  private onRestored (names: string[]): void {
    // A shard's connection came back: what it had queued is gone.
    this.pacing.reset()
    for (const name of names) {
      if (name === this.layout.controlChannel) {
        this.resyncControl()
        continue
      }
      const channel = this.layout.channelOf(name)
      if (channel !== undefined && this.held.has(channel) && this.historyConnection.status === 'ready') this.sequencer.catchUp(channel)
    }
    this.log.info({ channels: names.length }, 'redis cluster subscriptions restored')
  }

  /** Delivers what every held channel got while the subscriber was away. */
  private catchUpAll (): void {
    for (const channel of this.held) this.sequencer.catchUp(channel)
  }

  /**
   * An evicting maxmemory policy could drop a channel's meta hash and restart its stream in
   * the same epoch (lib/broker/redis-layout.ts), and a low pub/sub output buffer limit cuts a
   * busy subscriber off (lib/broker/redis-server-config.ts): say so once. CONFIG may be
   * disabled (managed Redis); then nothing is known and nothing is said.
   */
  private async checkServerSettings (): Promise<void> {
    try {
      const [, policy] = await this.commands.config('GET', 'maxmemory-policy') as string[]
      const [, maxmemory] = await this.commands.config('GET', 'maxmemory') as string[]
      if (policy !== undefined && policy !== 'noeviction' && Number(maxmemory) > 0) {
        this.log.warn({ policy, maxmemory }, 'redis may evict keys (maxmemory-policy is not noeviction): an evicted channel restarts its offsets in the same epoch; see docs/operations.md')
      }
      const [, limits] = await this.commands.config('GET', 'client-output-buffer-limit') as string[]
      const pubsub = pubsubBufferLimit(limits ?? '')
      this.pacing.setBudget(subscriberBudget(pubsub))
      if (pubsub !== undefined && pubsubLimitTooLow(pubsub)) {
        this.log.warn({ pubsub: `${pubsub.hardBytes} ${pubsub.softBytes} ${pubsub.softSeconds}`, recommended: RECOMMENDED_PUBSUB_LIMIT },
          'redis cuts a pub/sub connection whose output buffer passes client-output-buffer-limit pubsub: a busy gateway (a Kafka backlog) falls that far behind its own events and is cut off, and a channel with more events since than its history keeps loses them; see docs/operations.md')
      }
    } catch { /* CONFIG not allowed: nothing to check */ }
  }

  private onMessage (name: string, entry: string): void {
    if (name === this.layout.controlChannel) return this.control.receive(entry)
    const channel = this.layout.channelOf(name)
    if (channel === undefined || !this.held.has(channel)) return
    if (entry.startsWith(PRESENCE_MESSAGE)) return this.presence.receive(channel, entry)
    // Most often this instance's own event, delivered already from its publish's reply.
    const a = entry.indexOf(',')
    const b = entry.indexOf(',', a + 1)
    if (a > 0 && b > a && this.sequencer.handedOn(channel, entry.slice(0, a), Number(entry.slice(a + 1, b)))) return
    let event: PublishedEvent
    try {
      event = decodeEntry(channel, entry)
    } catch (err) {
      this.log.warn({ err, channel }, 'ignored a malformed pub/sub message')
      return
    }
    this.rawEntries.set(event, entry)
    this.sequencer.push(event)
  }
}

/**
 * Whether ioredis refused the command without sending it: a connection (or cluster) not
 * ready, with no offline queue to wait in (lib/broker/redis-connection.ts). Anything else
 * (a timeout, the connection closed under a sent command) leaves the outcome unknown.
 */
const refusedUnsent = (err: unknown): boolean => err instanceof Error && err.message.includes('enableOfflineQueue')

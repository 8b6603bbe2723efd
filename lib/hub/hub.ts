import { type Broker, type DeliverFn, type HistoryResult, type ReadOptions, type ResetFn, type SincePosition, storeBytesOf } from '../broker/broker.js'
import { type ChannelReset, type Connection, isReset, type Transport } from './connection.js'
import { EncodedPresence, type PresenceCounts, type PresenceTotals, sameCounts, tracksPresence } from '../core/presence.js'
import { type PresenceLogger, PresenceTracker } from './presence-tracker.js'
import { type ChannelAsk, type ChannelPlan, type ChannelRead, holdsLive, planFor, readFor } from './replay-plan.js'
import { ClientError } from '../core/errors.js'
import { EncodedEvent, sharedEncodingOf, type PublishedEvent, type StreamPosition } from '../core/event.js'
import { WriteBatch } from '../core/write-batch.js'
import { channelRecord } from '../core/channel-record.js'
import {
  channelNames, heldCount, holds, NO_CHANNELS, sentAfter, setSentAfter, withChannel, withoutChannel
} from './held-channels.js'

/** A broker subscription that has settled: one shared value instead of a promise per channel. */
const SUBSCRIBED: Promise<void> = Promise.resolve()
/** A subscriber's reads may be answered from what delivery brought (ReadOptions). */
const FROM_DELIVERY: ReadOptions = Object.freeze({ fromDelivery: true })
/** A broker subscription that failed: the next local subscriber tries again. */
const FAILED = 'failed'

/**
 * A registered connection, as the hub sees it. Its hub-side state (what it holds, what is
 * held back while it replays) is on the connection itself (HubMember, lib/hub/connection.ts):
 * an object per connection fewer.
 */
type Member = Connection

export interface SubscribeOutcome {
  positions: Record<string, StreamPosition>
  /**
   * Per channel, the position the connection's stream continues from: the first event
   * `replay()` sends (replayed or live) is the one right after it. (SSE cursors start here.)
   */
  startsAfter: Record<string, StreamPosition>
  /** Only for channels the client gave a `since` for. */
  recovered: Record<string, boolean>
  /** Bytes of history the reads took from the store (storeBytesOf, lib/broker/broker.ts). */
  storeBytes: number
  /**
   * Sends the replayed events, then the live events that arrived meanwhile, and makes
   * the subscriptions live. Call it right after acknowledging, with no await between,
   * so nothing slips in between the acknowledgement and the replay. `keepHolding`: the live
   * events of the channels it joined or resumed stay held after the replay, until `release`.
   */
  replay(keepHolding?: boolean): void
  /**
   * False when the replay must wait for room that other replays hold, the user's or the
   * instance's (Connection.replayMustWait). Ask right before acknowledging, with no await
   * between; when false, `abandon()` and refuse the subscribe as one to retry: acknowledged,
   * its replay would cut the connection (4008) and be lost with it.
   */
  replayCanStart(): boolean
  /** Undoes the subscribe instead of `replay()`, as a failed one is undone (the connection is left as it was). */
  abandon(): void
}

export interface LocalStats {
  totalConnections: number
  uniqueUsers: number
  userConnections: Array<{ userId: string, connectionCount: number }>
  channels: number
  connectionsByTransport: Record<Transport, number>
}

export interface HubOptions {
  maxChannelsPerConnection: number
  /** Live counts for channels under these prefixes (PRESENCE_CHANNELS), told every PRESENCE_INTERVAL_MS at most. */
  presence?: { prefixes: readonly string[], intervalMs: number, log?: PresenceLogger }
  /** Called once per delivered event with the number of local recipients. */
  onDelivered?: (event: PublishedEvent, recipients: number) => void
}

/**
 * The in-process connection registry: connections by id, by user and by channel.
 * `deliver` encodes each event once per transport and hands the same bytes to every
 * local subscriber. The hub subscribes the broker to a channel on its first local
 * subscriber and unsubscribes on its last.
 */
export class Hub {
  readonly broker: Broker
  /**
   * When this hub's socket writes leave (lib/core/write-batch.ts): one per hub, so two
   * apps in one process never batch each other's sockets. Publishers issue bursts
   * through it (lib/ingress/publisher.ts), WebSocket connections join it.
   */
  readonly writeBatch = new WriteBatch()
  /** Keyed by the connection itself: no id string kept per connection for the key. */
  private readonly members = new Set<Member>()
  /** Set by shutDown: no connection is admitted any more. */
  private shuttingDown = false
  /** Connections per user: only counted, never walked. */
  private readonly byUser = new Map<string, number>()
  /** Connections with no user, per client address (Identity.clientIp): only counted. */
  private readonly byAddress = new Map<string, number>()
  /**
   * A channel's local subscribers: the member itself while it is the only one (every
   * user:<id> channel, mostly), a Set from the second on. Idle memory per connection is
   * largely small Sets, so the common case keeps none.
   */
  private readonly byChannel = new Map<string, Member | Set<Member>>()
  /**
   * Broker subscriptions in flight (concurrent joins share one) or FAILED. A settled one
   * leaves no entry: a channel with local subscribers and no entry is subscribed, so the
   * common case keeps nothing per channel here.
   */
  private readonly brokerSubscriptions = new Map<string, Promise<void> | typeof FAILED>()
  private readonly transportCounts: Record<Transport, number> = { ws: 0, sse: 0 }

  /** Presence counts (lib/core/presence.ts); null when no channel keeps them. */
  private readonly presence: PresenceTracker | null
  private readonly presencePrefixes: readonly string[]
  /**
   * Per channel, the subscribers told its counts right after subscribing since the channel's
   * last push, with what they were told: that frame already carried the change the next push
   * announces, so the push skips them when its numbers are the same (a subscriber is told
   * only when its numbers change). Emptied at each push of the channel and as members leave.
   */
  private readonly presenceGreeted = new Map<string, Map<Member, PresenceCounts>>()

  constructor (createBroker: (deliver: DeliverFn, reset: ResetFn) => Broker, private readonly options: HubOptions) {
    this.broker = createBroker((event, payloadJson) => this.deliver(event, payloadJson), (channel, position) => this.reset(channel, position))
    this.presencePrefixes = options.presence?.prefixes ?? []
    this.presence = options.presence === undefined || this.presencePrefixes.length === 0
      ? null
      : new PresenceTracker({
        intervalMs: options.presence.intervalMs,
        backend: this.broker.presence,
        push: (channel, counts, previous) => { this.pushPresence(channel, counts, previous) },
        log: options.presence.log
      })
  }

  /** Whether the channel keeps presence counts (PRESENCE_CHANNELS). */
  tracksPresence (channel: string): boolean {
    return this.presence !== null && tracksPresence(this.presencePrefixes, channel)
  }

  /** Channels this instance keeps presence state for (held ones, and ones still being released). */
  presenceChannelCount (): number {
    return this.presence?.channelCount ?? 0
  }

  /** The channel's presence over every instance; undefined for a channel that keeps none. */
  async presenceOf (channel: string): Promise<PresenceTotals | undefined> {
    if (this.presence === null || !this.tracksPresence(channel)) return undefined
    return await this.presence.lookup(channel)
  }

  private pushPresence (channel: string, counts: PresenceCounts, previous: PresenceCounts | undefined): void {
    const greeted = this.presenceGreeted.get(channel)
    this.presenceGreeted.delete(channel)
    let presence: EncodedPresence | undefined
    for (const member of this.subscribersOf(channel)) {
      // What it was told last: its greeting if it came since the last push, else that push.
      const told = greeted?.get(member) ?? previous
      if (sameCounts(told, counts)) continue
      member.sendPresence(presence ??= new EncodedPresence(channel, counts))
    }
  }

  /** Stops the hub's timers, withdrawing this instance's presence shares (lib/hub/presence-tracker.ts); the broker is closed by its owner. */
  async close (): Promise<void> {
    await this.presence?.close()
  }

  add (connection: Connection): void {
    if (this.members.has(connection)) return
    connection.heldChannels = NO_CHANNELS
    connection.pendingEvents = null
    this.members.add(connection)
    this.transportCounts[connection.transport]++
    const { userId, clientIp } = connection.identity
    if (userId !== null) increment(this.byUser, userId)
    else if (clientIp !== undefined) increment(this.byAddress, clientIp)
  }

  /** Forgets the connection and leaves its channels. Safe to call twice. */
  remove (connection: Connection): void {
    const member: Member = connection
    if (!this.members.delete(member)) return
    this.transportCounts[connection.transport]--
    const { userId, clientIp } = connection.identity
    if (userId !== null) decrement(this.byUser, userId)
    else if (clientIp !== undefined) decrement(this.byAddress, clientIp)
    for (const channel of channelNames(member.heldChannels)) this.leave(member, channel)
    member.heldChannels = NO_CHANNELS
    member.pendingEvents = null
  }

  /** Every registered connection (the transports' heartbeats walk their own among them). */
  connections (): IterableIterator<Connection> {
    return this.members.values()
  }

  connectionCount (): number {
    return this.members.size
  }

  userConnectionCount (userId: string): number {
    return this.byUser.get(userId) ?? 0
  }

  /** Connections with no user from this client address. */
  addressConnectionCount (clientIp: string): number {
    return this.byAddress.get(clientIp) ?? 0
  }

  /**
   * Subscribes to each channel (ACL is the caller's job). What each channel sends first is
   * decided by lib/hub/replay-plan.ts: with a `since`, the missed events; with `rewind`, the
   * channel's last events; otherwise nothing, from the live edge. `replay()` sends it, then
   * the live events held back meanwhile: no gap, no duplicate at the seam.
   * Throws ClientError('too_many_channels') past the per-connection limit; on any failure
   * the connection is left as it was.
   */
  async subscribe (
    connection: Connection,
    channels: readonly string[],
    since: Readonly<Record<string, SincePosition>> = {},
    rewind?: number
  ): Promise<SubscribeOutcome> {
    const member: Member = connection
    if (!this.members.has(member)) throw new Error('connection is not registered')
    // A channel named twice is one subscription: read (and replayed) once.
    const unique = [...new Set(channels)]
    const asks = unique.map((channel): ChannelAsk => ({ sentAfter: sentAfter(member.heldChannels, channel), since: since[channel], rewind }))
    const fresh = unique.filter((_, i) => asks[i].sentAfter === undefined)
    if (heldCount(member.heldChannels) + fresh.length > this.options.maxChannelsPerConnection) {
      throw new ClientError('too_many_channels',
        `at most ${this.options.maxChannelsPerConnection} channels per connection`)
    }
    const holding = unique.filter((_, i) => holdsLive(asks[i]))
    // Events held already (a WebSocket's own channels, since its greeting: replay's keepHolding)
    // stay: the plan counts them as held, and a subscribe undone hands them back as they were.
    const heldBefore: ReadonlySet<string> = member.pendingEvents === null ? NOTHING_HELD : new Set(holding.filter((c) => member.pendingEvents?.has(c)))
    member.pendingEvents ??= new Map()
    for (const channel of holding) if (!heldBefore.has(channel)) member.pendingEvents.set(channel, [])
    // Which channels this connection is the first local subscriber of, before joining.
    const first = new Set(fresh.filter((c) => !this.byChannel.has(c)))
    for (const channel of fresh) this.join(member, channel)
    let plans: ChannelPlan[]
    let results: HistoryResult[]
    try {
      await Promise.all(fresh.map(async (channel) => {
        await this.brokerSubscription(channel, first.has(channel))
        // Not if every local subscriber left meanwhile (this connection closed during its
        // subscribe): opening would bring back state that nothing would ever release.
        if (first.has(channel) && this.byChannel.has(channel) && this.tracksPresence(channel)) await this.presence?.open(channel)
      }))
      results = await Promise.all(unique.map((channel, i) => this.read(channel, readFor(asks[i]))))
      plans = asks.map((ask, i) => planFor(ask, results[i], firstHeldOffset(member.pendingEvents?.get(unique[i]))))
    } catch (err) {
      this.unwind(member, unique, asks, heldBefore)
      throw err
    }
    const positions = channelRecord<StreamPosition>()
    const startsAfter = channelRecord<StreamPosition>()
    const recovered = channelRecord<boolean>()
    unique.forEach((channel, i) => {
      const position = results[i].position
      positions[channel] = position
      const plan = plans[i]
      if (plan.recovered !== undefined) recovered[channel] = plan.recovered
      if (plan.sentAfter !== undefined) setSentAfter(member.heldChannels, channel, plan.sentAfter)
      startsAfter[channel] = { offset: plan.sentAfter ?? position.offset, epoch: position.epoch }
    })
    let storeBytes = 0
    for (const result of results) storeBytes += storeBytesOf(result)
    // The events of every channel as one replay, so the connection weighs all of it before
    // writing any (lib/transport/replay-backlog.ts); encoded once, shared with other members.
    let replayed: EncodedEvent[] | undefined
    for (const plan of plans) {
      if (plan.replay.length === 0) continue
      replayed ??= []
      for (const event of plan.replay) replayed.push(sharedEncodingOf(event))
    }
    return {
      positions,
      startsAfter,
      recovered,
      storeBytes,
      replayCanStart: () => replayed === undefined || !this.members.has(connection) || !connection.replayMustWait(replayed),
      abandon: () => {
        // Held channels a resume had moved go back to what they had been sent (nothing is
        // awaited between the plan and this, so nothing else has moved them meanwhile).
        asks.forEach((ask, i) => {
          if (ask.sentAfter !== undefined && plans[i].sentAfter !== undefined) setSentAfter(member.heldChannels, unique[i], ask.sentAfter)
        })
        this.unwind(member, unique, asks, heldBefore)
      },
      replay: (keepHolding = false) => {
        if (!this.members.has(connection)) return
        // Each channel's reset before its events, all of which go as one replay.
        plans.forEach((plan, i) => { if (plan.reset !== undefined) connection.sendReset(unique[i], plan.reset) })
        if (replayed !== undefined) connection.sendReplayed(replayed)
        for (const channel of holding) {
          const held = member.pendingEvents?.get(channel)
          member.pendingEvents?.delete(channel)
          if (held === undefined) continue
          const index = unique.indexOf(channel)
          let after = plans[index].liveAfter
          // Kept held instead (keepHolding) until release(), which sends them as they would have been.
          const kept: Array<EncodedEvent | ChannelReset> | undefined = keepHolding ? [] : undefined
          for (let k = firstFreshHeld(held, results[index].position.epoch, after); k < held.length; k++) {
            const item = held[k]
            if (isReset(item)) {
              // Everything now counts from the reset's position.
              after = item.position.offset
              if (kept !== undefined) kept.push(item)
              else {
                setSentAfter(member.heldChannels, channel, after)
                sendHeld(connection, item)
              }
            } else if (item.event.offset > after) {
              if (kept !== undefined) kept.push(item)
              else sendHeld(connection, item)
            }
          }
          if (kept !== undefined) (member.pendingEvents ??= new Map()).set(channel, kept)
        }
        if (member.pendingEvents?.size === 0) member.pendingEvents = null
        // Presence comes right after subscribing, then as it changes (lib/hub/presence-tracker.ts).
        for (const channel of unique) {
          if (!this.tracksPresence(channel) || !holds(member.heldChannels, channel)) continue
          const counts = (this.presence as PresenceTracker).counts(channel)
          connection.sendPresence(new EncodedPresence(channel, counts))
          let greeted = this.presenceGreeted.get(channel)
          if (greeted === undefined) this.presenceGreeted.set(channel, greeted = new Map())
          greeted.set(member, counts)
          ;(this.presence as PresenceTracker).greeted(channel, counts)
        }
      }
    }
  }

  /** Reads the broker as the plan asks. */
  private async read (channel: string, read: ChannelRead): Promise<HistoryResult> {
    switch (read.kind) {
      case 'since': return await this.broker.history(channel, read.since, FROM_DELIVERY)
      case 'recent': return await this.broker.recent(channel, read.count, FROM_DELIVERY)
      default: return await this.broker.history(channel, undefined, FROM_DELIVERY)
    }
  }

  /**
   * A subscribe failed half way: channels it joined are left again, and channels the
   * connection already held get what was held back for them, as they would have.
   */
  private unwind (member: Member, channels: readonly string[], asks: readonly ChannelAsk[], heldBefore: ReadonlySet<string>): void {
    channels.forEach((channel, i) => {
      // Held before this subscribe (kept by a replay): held still, as it was.
      if (heldBefore.has(channel)) return
      const held = member.pendingEvents?.get(channel)
      member.pendingEvents?.delete(channel)
      if (asks[i].sentAfter !== undefined) {
        if (held !== undefined) this.flushHeldCounted(member, channel, held)
      } else if (this.members.has(member)) {
        this.leave(member, channel)
      }
    })
    if (member.pendingEvents?.size === 0) member.pendingEvents = null
  }

  /**
   * Sends, in order, what a `replay(true)` kept held of the channels and no subscribe has
   * taken since. A WebSocket connection keeps its own channels (`user:<id>`) so from its
   * greeting until its first frame (lib/transport/ws-session.ts, holdOwnChannels): a client
   * resuming them with `since` meanwhile gets what it missed before them, in order. An event
   * sent live before the resume arrived made it a `system:reset` and that event again (an
   * audit of rolling deploys: 3 of 52 resumes at 10 events/s per user).
   */
  release (connection: Connection, channels: readonly string[]): void {
    const member: Member = connection
    const pending = member.pendingEvents
    if (pending === null || pending === undefined) return
    for (const channel of channels) {
      const held = pending.get(channel)
      if (held === undefined) continue
      pending.delete(channel)
      this.flushHeldCounted(member, channel, held)
    }
    if (pending.size === 0) member.pendingEvents = null
  }

  /** flushHeld, each event counted as delivered (it was not when it was held back). */
  private flushHeldCounted (member: Member, channel: string, held: ReadonlyArray<EncodedEvent | ChannelReset>): void {
    flushHeld(member, channel, held)
    const onDelivered = this.options.onDelivered
    if (onDelivered !== undefined) for (const item of held) if (!isReset(item)) onDelivered(item.event, 1)
  }

  /** The channels a connection holds. */
  channelsOf (connection: Connection): string[] {
    return channelNames(connection.heldChannels)
  }

  /** Leaves the channels; returns the ones the connection actually held. */
  unsubscribe (connection: Connection, channels: readonly string[]): string[] {
    const member: Member = connection
    if (!this.members.has(member)) return []
    const left: string[] = []
    for (const channel of channels) {
      if (!holds(member.heldChannels, channel)) continue
      member.pendingEvents?.delete(channel)
      this.leave(member, channel)
      left.push(channel)
    }
    return left
  }

  /** Hands an event to every local subscriber of its channel. Called by the broker. */
  deliver (event: PublishedEvent, payloadJson?: string): void {
    const subscribers = this.byChannel.get(event.channel)
    let recipients = 0
    if (subscribers !== undefined) {
      // Encoding is lazy and shared, so each transport's bytes are built at most once.
      const encoded = new EncodedEvent(event, payloadJson)
      if (subscribers instanceof Set) {
        for (const member of subscribers) recipients += offer(member, event, encoded)
      } else {
        recipients += offer(subscribers, event, encoded)
      }
    }
    this.options.onDelivered?.(event, recipients)
  }

  /**
   * A channel's stream restarted or skipped (lib/broker/broker.ts ResetFn): every local
   * subscriber is told where it counts on from before its next event. One still replaying
   * the channel gets it in order, after what it was already sent.
   */
  reset (channel: string, position: StreamPosition): void {
    const subscribers = this.byChannel.get(channel)
    if (subscribers === undefined) return
    const reset: ChannelReset = { reset: true, channel, position }
    for (const member of subscribers instanceof Set ? subscribers : [subscribers]) {
      const held = member.pendingEvents?.get(channel)
      if (held !== undefined) {
        held.push(reset)
        continue
      }
      setSentAfter(member.heldChannels, channel, position.offset)
      member.sendReset(channel, position)
    }
  }

  /** Closes every connection whose identity matches (disconnect, revoke); returns how many. */
  closeWhere (match: (identity: Connection['identity']) => boolean, code: number, reason: string): number {
    let closed = 0
    for (const connection of [...this.members]) {
      if (!match(connection.identity)) continue
      connection.close(code, reason)
      closed++
    }
    return closed
  }

  /** Closes every connection with the code (shutdown: 1012). */
  closeAll (code: number, reason: string): void {
    for (const connection of [...this.members]) connection.close(code, reason)
  }

  /**
   * The instance is shutting down: every connection is closed with the code, and from now
   * on no new one is admitted (lib/hub/admission.ts). An upgrade or stream whose request
   * was accepted just before would otherwise join after the rest were closed, and keep the
   * server's close waiting on its socket.
   */
  shutDown (code: number, reason: string): void {
    this.shuttingDown = true
    this.closeAll(code, reason)
  }

  get isShuttingDown (): boolean {
    return this.shuttingDown
  }

  stats (): LocalStats {
    const userConnections: LocalStats['userConnections'] = []
    for (const [userId, count] of this.byUser) userConnections.push({ userId, connectionCount: count })
    return {
      totalConnections: this.members.size,
      uniqueUsers: this.byUser.size,
      userConnections,
      channels: this.byChannel.size,
      connectionsByTransport: { ...this.transportCounts }
    }
  }

  private join (member: Member, channel: string): void {
    member.heldChannels = withChannel(member.heldChannels, channel, 0)
    const current = this.byChannel.get(channel)
    if (current === undefined) this.byChannel.set(channel, member)
    else if (current instanceof Set) current.add(member)
    else if (current !== member) this.byChannel.set(channel, new Set([current, member]))
    if (this.tracksPresence(channel)) this.presence?.joined(channel, member.identity.userId)
  }

  /** How many of `channels` no local connection holds: subscribing them makes this instance take them on. */
  unheldCount (channels: readonly string[]): number {
    let count = 0
    for (const channel of channels) if (!this.byChannel.has(channel)) count++
    return count
  }

  /** A channel's local subscribers. */
  private subscribersOf (channel: string): Iterable<Member> {
    const current = this.byChannel.get(channel)
    return current === undefined ? [] : current instanceof Set ? current : [current]
  }

  private leave (member: Member, channel: string): void {
    member.heldChannels = withoutChannel(member.heldChannels, channel)
    const current = this.byChannel.get(channel)
    if (current === undefined) return
    let empty = false
    if (current instanceof Set) {
      current.delete(member)
      empty = current.size === 0
    } else {
      empty = current === member
    }
    if (empty) {
      this.byChannel.delete(channel)
      this.brokerSubscriptions.delete(channel)
      this.broker.unsubscribe(channel).catch(() => { /* the broker logs; nothing to undo here */ })
    }
    if (this.tracksPresence(channel)) {
      this.presence?.left(channel, member.identity.userId, empty)
      const greeted = this.presenceGreeted.get(channel)
      if (greeted?.delete(member) === true && greeted.size === 0) this.presenceGreeted.delete(channel)
    }
  }

  /** Subscribes the broker on a channel's first local subscriber (`first`), or shares what is under way. */
  private brokerSubscription (channel: string, first: boolean): Promise<void> {
    const pending = this.brokerSubscriptions.get(channel)
    if (pending instanceof Promise) return pending
    if (pending === undefined && !first) return SUBSCRIBED
    const inFlight = this.broker.subscribe(channel)
    // Settled, it leaves no entry; failed, the next joiner tries again.
    inFlight.then(
      () => { if (this.brokerSubscriptions.get(channel) === inFlight) this.brokerSubscriptions.delete(channel) },
      () => { if (this.brokerSubscriptions.get(channel) === inFlight) this.brokerSubscriptions.set(channel, FAILED) }
    )
    this.brokerSubscriptions.set(channel, inFlight)
    return inFlight
  }
}

function increment (counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1)
}

function decrement (counts: Map<string, number>, key: string): void {
  const count = (counts.get(key) ?? 1) - 1
  if (count > 0) counts.set(key, count)
  else counts.delete(key)
}

/**
 * Where what was held back for a replaying channel stops being stale: after the last reset
 * the read already went past (in the read's epoch, at or before `liveAfter`, what the plan
 * counts the connection from), with everything before it: older epochs' events and resets
 * the read's position has overtaken. Sending such a reset would count the connection back
 * and send events a second time. `liveAfter` 0 places the connection nowhere in the read's
 * epoch (nothing was recovered, or every held event is new): nothing is stale then.
 */
function firstFreshHeld (held: ReadonlyArray<EncodedEvent | ChannelReset>, readEpoch: string, liveAfter: number): number {
  if (liveAfter === 0) return 0
  for (let k = held.length - 1; k >= 0; k--) {
    const item = held[k]
    if (isReset(item) && item.position.epoch === readEpoch && item.position.offset <= liveAfter) return k + 1
  }
  return 0
}

/** The offset of the first event held back for a replaying channel (undefined: none, or a reset first). */
function firstHeldOffset (held: ReadonlyArray<EncodedEvent | ChannelReset> | undefined): number | undefined {
  const first = held?.[0]
  return first === undefined || isReset(first) ? undefined : first.event.offset
}

/** A subscribe's channels held before it, when the connection held none (most subscribes). */
const NOTHING_HELD: ReadonlySet<string> = new Set()

/** Sends what was held back of a channel, in order; a reset moves where the channel counts from. */
function flushHeld (member: Member, channel: string, held: ReadonlyArray<EncodedEvent | ChannelReset>): void {
  for (const item of held) {
    if (isReset(item)) setSentAfter(member.heldChannels, channel, item.position.offset)
    sendHeld(member, item)
  }
}

/** Sends what was held back for a replaying channel: an event, or a reset. */
function sendHeld (connection: Connection, item: EncodedEvent | ChannelReset): void {
  if (isReset(item)) connection.sendReset(item.channel, item.position)
  else connection.sendEvent(item)
}

/** Sends the event to one member, or holds it while that member's channel replays; 1 if sent. */
function offer (member: Member, event: PublishedEvent, encoded: EncodedEvent): number {
  const held = member.pendingEvents?.get(event.channel)
  if (held !== undefined) {
    // Its encoding is kept: every member replaying the channel shares its frames.
    held.push(encoded)
    return 0
  }
  member.sendEvent(encoded)
  return 1
}

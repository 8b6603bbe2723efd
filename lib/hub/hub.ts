import type { Broker, DeliverFn, ResetFn, SincePosition } from '../broker/broker.js'
import { type ChannelReset, type Connection, isReset, type Transport } from './connection.js'
import { ClientError } from '../core/errors.js'
import { EncodedEvent, type PublishedEvent, type StreamPosition } from '../core/event.js'
import {
  channelNames, heldCount, holds, NO_CHANNELS, sentAfter, setSentAfter, withChannel, withoutChannel
} from './held-channels.js'

/** A broker subscription that has settled: one shared value instead of a promise per channel. */
const SUBSCRIBED: Promise<void> = Promise.resolve()
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
  /** Only for channels the client gave a `since` for. */
  recovered: Record<string, boolean>
  /**
   * Sends the replayed events, then the live events that arrived meanwhile, and makes
   * the subscriptions live. Call it right after acknowledging, with no await between,
   * so nothing slips in between the acknowledgement and the replay.
   */
  replay(): void
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
  /** Keyed by the connection itself: no id string kept per connection for the key. */
  private readonly members = new Set<Member>()
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

  constructor (createBroker: (deliver: DeliverFn, reset: ResetFn) => Broker, private readonly options: HubOptions) {
    this.broker = createBroker((event) => this.deliver(event), (channel, position) => this.reset(channel, position))
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
   * Subscribes to each channel (ACL is the caller's job). With a `since` for a channel,
   * the missed events are replayed by `replay()`; without, the subscription starts at the
   * live edge. A `since` for a channel already held (the user's own, joined at connect)
   * resumes it: only the events this connection has not been sent are replayed, so
   * nothing comes twice (they may come after newer live ones it already had).
   * Throws ClientError('too_many_channels') past the per-connection limit.
   */
  async subscribe (
    connection: Connection,
    channels: readonly string[],
    since: Readonly<Record<string, SincePosition>> = {}
  ): Promise<SubscribeOutcome> {
    const member: Member = connection
    if (!this.members.has(member)) throw new Error('connection is not registered')
    // A channel named twice is one subscription: read (and replayed) once.
    const unique = [...new Set(channels)]
    const fresh = unique.filter((c) => !holds(member.heldChannels, c))
    const resumed = unique.filter((c) => holds(member.heldChannels, c) && since[c] !== undefined)
    const replaying = [...fresh, ...resumed]
    if (heldCount(member.heldChannels) + fresh.length > this.options.maxChannelsPerConnection) {
      throw new ClientError('too_many_channels',
        `at most ${this.options.maxChannelsPerConnection} channels per connection`)
    }
    member.pendingEvents ??= new Map()
    for (const channel of replaying) member.pendingEvents.set(channel, [])
    // Which channels this connection is the first local subscriber of, before joining.
    const first = fresh.filter((c) => !this.byChannel.has(c))
    for (const channel of fresh) this.join(member, channel)
    const positions: Record<string, StreamPosition> = {}
    const recovered: Record<string, boolean> = {}
    const replays: PublishedEvent[][] = []
    try {
      await Promise.all(fresh.map((channel) => this.brokerSubscription(channel, first.includes(channel))))
      await Promise.all(unique.map(async (channel) => {
        const replay = replaying.includes(channel)
        const from = since[channel]
        const result = await this.broker.history(channel, replay ? from : undefined)
        positions[channel] = result.position
        const sent = sentAfter(member.heldChannels, channel) ?? 0
        if (!resumed.includes(channel)) {
          if (from !== undefined) recovered[channel] = result.recovered
          // A fresh channel: everything after its start went (or goes) out. A channel held
          // already and named again without `since` keeps what it had.
          if (replay) {
            replays.push(result.events)
            setSentAfter(member.heldChannels, channel, result.recovered && from !== undefined ? from.offset : result.position.offset)
          }
        } else if (from.offset >= sent && result.position.offset >= from.offset &&
          (from.epoch === undefined || from.epoch === result.position.epoch)) {
          // Everything after `from` already went out live: nothing to replay.
          recovered[channel] = true
        } else {
          recovered[channel] = result.recovered
          if (result.recovered) {
            replays.push(result.events.filter((e) => e.offset <= sent))
            setSentAfter(member.heldChannels, channel, from.offset)
          }
        }
      }))
    } catch (err) {
      for (const channel of resumed) {
        // Still subscribed: what was held for it goes out as it would have.
        for (const e of member.pendingEvents?.get(channel) ?? []) sendHeld(connection, e)
        member.pendingEvents?.delete(channel)
      }
      for (const channel of fresh) {
        member.pendingEvents?.delete(channel)
        if (this.members.has(connection)) this.leave(member, channel)
      }
      throw err
    }
    return {
      positions,
      recovered,
      replay: () => {
        if (!this.members.has(connection)) return
        for (const events of replays) for (const e of events) connection.sendEvent(new EncodedEvent(e))
        for (const channel of replaying) {
          const held = member.pendingEvents?.get(channel)
          member.pendingEvents?.delete(channel)
          if (held === undefined) continue
          // What a held channel held back is all new to the connection; a fresh channel's
          // events up to the position read came in the replay (or predate the live edge).
          // After a reset, everything counts from the reset's position.
          let after = resumed.includes(channel) ? 0 : positions[channel].offset
          for (const e of held) {
            if (isReset(e)) {
              after = e.position.offset
              setSentAfter(member.heldChannels, channel, after)
              sendHeld(connection, e)
            } else if (e.offset > after) {
              sendHeld(connection, e)
            }
          }
        }
        if (member.pendingEvents?.size === 0) member.pendingEvents = null
      }
    }
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
  deliver (event: PublishedEvent): void {
    const subscribers = this.byChannel.get(event.channel)
    let recipients = 0
    if (subscribers !== undefined) {
      // Encoding is lazy and shared, so each transport's bytes are built at most once.
      const encoded = new EncodedEvent(event)
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

  /** Closes every connection with the code (shutdown: 1012). */
  closeAll (code: number, reason: string): void {
    for (const connection of [...this.members]) connection.close(code, reason)
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

/** Sends what was held back for a replaying channel: an event, or a reset. */
function sendHeld (connection: Connection, item: PublishedEvent | ChannelReset): void {
  if (isReset(item)) connection.sendReset(item.channel, item.position)
  else connection.sendEvent(new EncodedEvent(item))
}

/** Sends the event to one member, or holds it while that member's channel replays; 1 if sent. */
function offer (member: Member, event: PublishedEvent, encoded: EncodedEvent): number {
  const held = member.pendingEvents?.get(event.channel)
  if (held !== undefined) {
    held.push(event)
    return 0
  }
  member.sendEvent(encoded)
  return 1
}
